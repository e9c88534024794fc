// Package promtext writes metrics in the Prometheus text exposition format
// (version 0.0.4, what every Prometheus scrapes), and the Go runtime's and
// the process's standard metrics under the names the Prometheus Go client
// gives them.
//
// It replaces the Prometheus Go client in the daemon, whose metrics are all
// computed at scrape time from counters it keeps anyway: the client's
// registry, metric types and protobuf encoding were 0.7 MiB of a 10 MiB
// binary for what is a few lines of text.
package promtext

import (
	"math"
	"net/http"
	"strconv"
	"strings"
)

// ContentType is the text format's media type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Writer accumulates one exposition. Families must be written whole: the
// header (Family), then every sample of that family.
type Writer struct {
	b []byte
}

// Metric types.
const (
	Counter = "counter"
	Gauge   = "gauge"
	Summary = "summary"
)

// Family starts a metric family: its HELP and TYPE lines.
func (w *Writer) Family(name, typ, help string) {
	w.b = append(w.b, "# HELP "...)
	w.b = append(w.b, name...)
	w.b = append(w.b, ' ')
	w.b = append(w.b, escapeHelp(help)...)
	w.b = append(w.b, "\n# TYPE "...)
	w.b = append(w.b, name...)
	w.b = append(w.b, ' ')
	w.b = append(w.b, typ...)
	w.b = append(w.b, '\n')
}

// Sample writes one sample of the current family; labels are name, value
// pairs, written in the order given (the Prometheus client sorts them by
// name; callers do too).
func (w *Writer) Sample(name string, v float64, labels ...string) {
	w.b = append(w.b, name...)
	if len(labels) > 0 {
		w.b = append(w.b, '{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.b = append(w.b, labels[i]...)
			w.b = append(w.b, `="`...)
			w.b = append(w.b, escapeLabel(labels[i+1])...)
			w.b = append(w.b, '"')
		}
		w.b = append(w.b, '}')
	}
	w.b = append(w.b, ' ')
	w.b = appendFloat(w.b, v)
	w.b = append(w.b, '\n')
}

// One writes a family of one sample without labels.
func (w *Writer) One(name, typ, help string, v float64) {
	w.Family(name, typ, help)
	w.Sample(name, v)
}

// Bytes returns the exposition written so far.
func (w *Writer) Bytes() []byte { return w.b }

// Serve writes the exposition as an HTTP response.
func (w *Writer) Serve(rw http.ResponseWriter) {
	rw.Header().Set("Content-Type", ContentType)
	_, _ = rw.Write(w.b)
}

func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// escapeHelp escapes a HELP text: backslash and newline.
func escapeHelp(s string) string {
	if !strings.ContainsAny(s, "\\\n") {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

// escapeLabel escapes a label value: backslash, double quote and newline.
func escapeLabel(s string) string {
	if !strings.ContainsAny(s, "\\\"\n") {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}
