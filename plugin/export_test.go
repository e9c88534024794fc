package plugin

// The bounds a client of a plugin socket meets, for the tests that hit
// them (package plugin_test).
const (
	MaxConnsPerSocket = maxConnsPerSocket
	MaxRecvMsgSize    = maxRecvMsgSize
	MaxStreams        = maxStreams
	WindowSize        = windowSize
	HandshakeTimeout  = handshakeTimeout
	IdleTimeout       = idleTimeout
	SocketMode        = socketMode
)
