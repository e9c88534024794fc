package dra

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// klog's verbosity reaches zerolog's levels: V(0) info, V(1)-V(4) debug,
// V(5)+ trace; names and values become fields.
func TestLogr(t *testing.T) {
	var buf bytes.Buffer
	l := NewLogr(zerolog.New(&buf).Level(zerolog.DebugLevel)).WithName("dra").WithValues("node", "a")
	l.Info("shown at info")
	l.V(3).Info("shown at debug", "k", 1)
	l.V(6).Info("hidden: trace")
	l.Error(errors.New("boom"), "failed")
	// An odd list: the last key gets a placeholder, not a panic; a key
	// that is no string is named so.
	l.Info("odd", "k2", 2, "dangling")
	l.Info("nonstring", 7, "v")
	out := buf.String()
	for _, want := range []string{`"level":"info","node":"a","logger":"dra","message":"shown at info"`, `"level":"debug","node":"a","logger":"dra","k":1`, `"level":"error","node":"a","error":"boom","logger":"dra","message":"failed"`,
		`"k2":2,"dangling":"(missing)","message":"odd"`, `"!key":"v","message":"nonstring"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hidden") {
		t.Errorf("a V(6) line logged at debug level:\n%s", out)
	}
}
