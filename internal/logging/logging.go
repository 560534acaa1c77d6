// Package logging builds the process logger from the shared --log-level and --log-json flags.
package logging

import (
	"fmt"
	"io"

	"github.com/hashicorp/go-hclog"
)

// New returns the root logger of a binary. level is one of trace, debug, info, warn, error.
func New(name, level string, json bool, w io.Writer) (hclog.Logger, error) {
	lvl := hclog.LevelFromString(level)
	if lvl == hclog.NoLevel {
		return nil, fmt.Errorf("--log-level %q: want one of trace, debug, info, warn, error", level)
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:            name,
		Level:           lvl,
		JSONFormat:      json,
		Output:          w,
		IncludeLocation: false,
		TimeFormat:      "2006-01-02T15:04:05.000Z0700",
	}), nil
}
