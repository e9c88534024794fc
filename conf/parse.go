package conf

import (
	_ "embed" // for the default rule set
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Limits that keep a bad file from costing much.
const (
	// MaxCount caps a rule's count (device IDs advertised per resource).
	MaxCount = 10000
	// MaxFileSize caps the size of a rule file in bytes.
	MaxFileSize = 1 << 20
)

// DefaultSource is the Source of the Config that Default returns.
const DefaultSource = "default.yaml"

// defaultYAML is the old daemon's default rule file, unchanged.
//
//go:embed default.yaml
var defaultYAML []byte

// Default returns a fresh copy of the built-in rule set: the old daemon's
// default legacy file. It cannot fail; TestDefault proves the embedded file
// parses.
func Default() *Config {
	c, err := Parse(DefaultSource, defaultYAML)
	if err != nil {
		panic("conf: embedded default rules do not parse: " + err.Error())
	}
	return c
}

// Load reads the rule file at path and parses it with Parse. A read error is
// returned wrapped (errors.Is(err, fs.ErrNotExist) works); problems in the
// content are returned as Errors.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load rules: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes, validates and compiles a rule file. file names the file in
// messages and chooses the format: a ".toml" extension means TOML, anything
// else YAML, and a YAML file whose top level is a sequence is the legacy
// format, a mapping the versioned one. On failure the error is Errors,
// holding every problem found.
func Parse(file string, data []byte) (*Config, error) {
	l := &errorList{file: file}
	if len(data) > MaxFileSize {
		l.add(0, "", fmt.Sprintf("file is %d bytes; the limit is %d", len(data), MaxFileSize))
		return nil, l.err()
	}
	var (
		format Format
		raws   []rawRule
	)
	if strings.EqualFold(filepath.Ext(file), ".toml") {
		format, raws = FormatTOML, decodeTOML(l, data)
	} else {
		format, raws = decodeYAML(l, data)
	}
	rules := buildRules(l, format, raws)
	if err := l.err(); err != nil {
		return nil, err
	}
	return &Config{Source: file, Format: format, Rules: rules}, nil
}

// The top-level version key and the one version this package reads.
const (
	keyVersion   = "version"
	supportedVer = "v1"
)
