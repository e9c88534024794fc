package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/smarter-project/smarter-device-manager/conf"
)

// defaultRuleFiles are looked for, in this order, when --config is not
// given; the first that exists is used, else the embedded default rules.
//   - /etc/smarter-device-manager/rules.toml: where the .deb and the
//     systemd unit keep the rules on a bare node.
//   - /root/config/conf.yaml: where the old daemon read its rules (its
//     default -config config/conf.yaml, from its image's WORKDIR /root) and
//     where its manifests mount their ConfigMap, so a cluster switches
//     daemons by changing only the image.
func defaultRuleFiles() []string {
	return []string{
		"/etc/smarter-device-manager/rules.toml",
		"/root/config/conf.yaml",
	}
}

// ruleSource says where the rules came from: the file, and why that one.
type ruleSource struct {
	file    string   // "" for the embedded default
	why     string   // "--config", "found", "none found"
	ignored []string // other default files that exist but lost
}

func (s ruleSource) String() string {
	if s.file == "" {
		return "embedded default"
	}
	return s.file
}

// resolveRules picks the rule file: --config (or its environment
// variable) when set, which must then exist; otherwise the first of
// candidates that exists; otherwise none (the embedded default).
func resolveRules(flagValue string, candidates []string) (ruleSource, error) {
	if flagValue != "" {
		return ruleSource{file: flagValue, why: "--config"}, nil
	}
	var src ruleSource
	for _, c := range candidates {
		_, err := os.Stat(c)
		switch {
		case err == nil && src.file == "":
			src = ruleSource{file: c, why: "found"}
		case err == nil:
			src.ignored = append(src.ignored, c)
		case errors.Is(err, fs.ErrNotExist):
		default:
			// Present but unreadable (a permission problem): say so
			// rather than silently falling back to other rules.
			return ruleSource{}, fmt.Errorf("rule file %s: %w", c, err)
		}
	}
	if src.file == "" {
		src.why = "none found"
	}
	return src, nil
}

// loadRules resolves and loads the rules; the error lists every problem.
func loadRules(flagValue string, candidates []string) (*conf.Config, ruleSource, error) {
	src, err := resolveRules(flagValue, candidates)
	if err != nil {
		return nil, src, err
	}
	if src.file == "" {
		return conf.Default(), src, nil
	}
	cfg, err := conf.Load(src.file)
	return cfg, src, err
}
