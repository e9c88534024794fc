package dra

import (
	"github.com/go-logr/logr"
	"github.com/rs/zerolog"
)

// NewLogr is log as a logr.Logger, for what logs through klog: the
// kubelet plugin helper, the ResourceSlice controller, client-go. klog's
// verbosity maps onto zerolog's levels: V(0) info, V(1) to V(4) debug
// (state changes, retries), V(5) and above trace (each gRPC call and its
// answer).
func NewLogr(log zerolog.Logger) logr.Logger { return logr.New(logSink{log: log}) }

type logSink struct {
	log  zerolog.Logger
	name string
}

func level(v int) zerolog.Level {
	switch {
	case v <= 0:
		return zerolog.InfoLevel
	case v < 5:
		return zerolog.DebugLevel
	}
	return zerolog.TraceLevel
}

func (logSink) Init(logr.RuntimeInfo) {}

func (s logSink) Enabled(v int) bool {
	return level(v) >= s.log.GetLevel() && level(v) >= zerolog.GlobalLevel()
}

func (s logSink) Info(v int, msg string, kv ...any) { s.event(s.log.WithLevel(level(v)), kv).Msg(msg) }

func (s logSink) Error(err error, msg string, kv ...any) {
	s.event(s.log.Error().Err(err), kv).Msg(msg)
}

func (s logSink) event(ev *zerolog.Event, kv []any) *zerolog.Event {
	if s.name != "" {
		ev = ev.Str("logger", s.name)
	}
	return ev.Fields(pairs(kv))
}

func (s logSink) WithValues(kv ...any) logr.LogSink {
	s.log = s.log.With().Fields(pairs(kv)).Logger()
	return s
}

func (s logSink) WithName(name string) logr.LogSink {
	if s.name != "" {
		name = s.name + "/" + name
	}
	s.name = name
	return s
}

// pairs turns logr's key-value list into zerolog fields; a key that is
// not a string is formatted.
func pairs(kv []any) []any {
	out := make([]any, 0, len(kv)+len(kv)%2)
	for i := 0; i < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			k = "!key"
		}
		var v any = "(missing)"
		if i+1 < len(kv) {
			v = kv[i+1]
		}
		out = append(out, k, v)
	}
	return out
}
