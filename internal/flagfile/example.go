package flagfile

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
)

// commentedSetting matches a setting an example file shows commented out: "# key: value" at
// the start of a line. Prose comments must not look like that; CheckExample finds those that
// do, as unknown keys.
var commentedSetting = regexp.MustCompile(`(?m)^# ?([a-z][a-z0-9-]*:(?:[ \t].*)?)$`)

// Uncomment returns data with the commented-out settings made live.
func Uncomment(data []byte) []byte {
	return commentedSetting.ReplaceAll(data, []byte("$1"))
}

// CheckExample reports where the example config file at path and the flags that newFlags
// registers have drifted apart. The file must load as it is and with its commented-out
// settings made live, and then it must name every flag but the reserved ones.
func CheckExample(path string, newFlags func() *flag.FlagSet, reserved ...string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read example: %w", err)
	}
	if err := Apply(newFlags(), path, data, reserved...); err != nil {
		return err
	}
	fs := newFlags()
	if err := Apply(fs, path+" (uncommented)", Uncomment(data), reserved...); err != nil {
		return err
	}
	named := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { named[f.Name] = true })
	var missing []string
	fs.VisitAll(func(f *flag.Flag) {
		if !named[f.Name] && !slices.Contains(reserved, f.Name) {
			missing = append(missing, fmt.Sprintf("%q", f.Name))
		}
	})
	if len(missing) > 0 {
		return errors.New(path + ": does not show flags " + strings.Join(missing, ", "))
	}
	return nil
}
