package probe

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
)

// The probe answers each request with what the system call did, a failure
// as its errno name: the container tests compare those names.
func TestServe(t *testing.T) {
	reqs := []string{
		`{"op":"open","path":"/dev/null","flags":"rw"}`,
		`{"op":"open","path":"/nonexistent/sdm-probe","flags":"r"}`,
		`{"op":"stat","path":"/dev/null"}`,
		`{"op":"write","path":"/dev/null","data":"x"}`,
		`{"op":"list","path":"/nonexistent/sdm-probe"}`,
		`{"op":"frobnicate"}`,
		`not json`,
	}
	var out strings.Builder
	if err := Serve(strings.NewReader(strings.Join(reqs, "\n")+"\n"), &out); err != nil {
		t.Fatal(err)
	}
	var got []Reply
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		var r Reply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("answer %q: %v", sc.Text(), err)
		}
		got = append(got, r)
	}
	if len(got) != len(reqs) {
		t.Fatalf("%d answers to %d requests:\n%s", len(got), len(reqs), out.String())
	}
	for i, want := range []string{"ok", "ENOENT", "ok", "ok", "ENOENT", "?", "?"} {
		if got[i].Result() != want {
			t.Errorf("%s: %s (%s); want %s", reqs[i], got[i].Result(), got[i].Error, want)
		}
	}
	if n := got[2].Node(); !strings.HasPrefix(n, "c 1:3 ") {
		t.Errorf("stat /dev/null: %s; want c 1:3", n)
	}
}
