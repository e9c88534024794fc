// Command probe (built as the container tests' root filesystem) serves the
// probe's requests on stdin and stdout; it exits 0 at the end of its input.
package main

import (
	"fmt"
	"os"

	"github.com/smarter-project/smarter-device-manager/e2e/probe"
)

func main() {
	if err := probe.Serve(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
