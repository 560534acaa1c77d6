// Package flagfile sets a flag.FlagSet from a YAML config file whose keys are the flag names.
// The flags stay the one definition of every setting (name, default, help, parsing and
// checks): a file only supplies values, through fs.Set, for the flags the command line left
// alone. Every error names the file and the line.
package flagfile

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/llmscaler/llmscaler/internal/yamlnode"
)

// Load reads the config file at path and applies it to fs with Apply.
func Load(fs *flag.FlagSet, path string, reserved ...string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	return Apply(fs, path, data, reserved...)
}

// Apply sets each flag of fs that a key of the YAML mapping in data names, unless the command
// line set it already, so call it after fs.Parse. Values are scalars, except that a List flag
// also takes a list and a Map flag a mapping. reserved names flags a file may not set.
// filename is used in errors; Apply reports every error it finds, one per line.
func Apply(fs *flag.FlagSet, filename string, data []byte, reserved ...string) error {
	root, err := parse(filename, data)
	if err != nil || root == nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	errorf := func(n *yaml.Node, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s", filename, n.Line, fmt.Sprintf(format, args...)))
	}
	pairs(root, "", errorf, func(name string, k, v *yaml.Node) {
		f := fs.Lookup(name)
		switch {
		case slices.Contains(reserved, name):
			errorf(k, "%q cannot be set in a config file", name)
			return
		case f == nil:
			errorf(k, "unknown key %q%s", name, suggest(fs, name, reserved))
			return
		}
		s, ok := value(f, name, v, errorf)
		if !ok || given[name] {
			return
		}
		if err := fs.Set(name, s); err != nil {
			errorf(k, "%s: %v", name, explain(f, s, err))
		}
	})
	return errors.Join(errs...)
}

// errorfFunc records an error at the line of n.
type errorfFunc func(n *yaml.Node, format string, args ...any)

// parse returns the top-level mapping of data, or nil when data holds no settings at all.
func parse(filename string, data []byte) (*yaml.Node, error) {
	// Syntax errors keep the YAML parser's own "line N", as the catalog's do: for some
	// errors it counts from 0, so it is not passed off as file:line.
	syntax := func(err error) error { return fmt.Errorf("%s: %w", filename, err) }
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case err == io.EOF:
		return nil, nil
	case err != nil:
		return nil, syntax(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, fmt.Errorf("%s:%d: a second YAML document; want one mapping of flag names to values", filename, next.Line)
	case err != io.EOF:
		return nil, syntax(err)
	}
	root := yamlnode.Resolve(doc.Content[0])
	switch {
	case yamlnode.IsNull(root):
		return nil, nil
	case root.Kind != yaml.MappingNode:
		return nil, fmt.Errorf("%s:%d: want a mapping of flag names to values, got %s", filename, root.Line, yamlnode.KindName(root))
	}
	return root, nil
}

// pairs calls fn for each key of the mapping n in order, reporting keys that are not
// scalars and keys given twice. where prefixes those errors.
func pairs(n *yaml.Node, where string, errorf errorfFunc, fn func(key string, k, v *yaml.Node)) {
	lines := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := yamlnode.Resolve(n.Content[i]), yamlnode.Resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			errorf(k, "%swant a name as key, got %s", where, yamlnode.KindName(k))
			continue
		}
		if first, dup := lines[k.Value]; dup {
			errorf(k, "%sduplicate key %q (first at line %d)", where, k.Value, first)
			continue
		}
		lines[k.Value] = k.Line
		fn(k.Value, k, v)
	}
}

// value turns the YAML value v of flag f into the text fs.Set takes.
func value(f *flag.Flag, where string, v *yaml.Node, errorf errorfFunc) (string, bool) {
	scalar := func(n *yaml.Node, where string) (string, bool) {
		switch {
		case yamlnode.IsNull(n):
			errorf(n, "%s: no value (write \"\" for an empty one)", where)
			return "", false
		case n.Kind != yaml.ScalarNode:
			errorf(n, "%s: want a single value, got %s", where, yamlnode.KindName(n))
			return "", false
		}
		return n.Value, true
	}
	var parts []string
	ok := true
	_, isList := f.Value.(*List)
	_, isMap := f.Value.(*Map)
	switch {
	case v.Kind == yaml.SequenceNode && isList:
		for i, e := range v.Content {
			e = yamlnode.Resolve(e)
			s, eok := scalar(e, fmt.Sprintf("%s[%d]", where, i))
			if eok && strings.TrimSpace(s) == "" {
				errorf(e, "%s[%d]: empty element", where, i)
				eok = false
			}
			parts, ok = append(parts, s), ok && eok
		}
	case v.Kind == yaml.MappingNode && isMap:
		pairs(v, where+": ", errorf, func(key string, _, val *yaml.Node) {
			s, vok := scalar(val, where+"."+key)
			parts, ok = append(parts, key+"="+s), ok && vok
		})
	default:
		return scalar(v, where)
	}
	return strings.Join(parts, ","), ok
}

// explain replaces the flag package's bare "parse error" and "value out of range" for its
// own flag types with the reason, so that the file's author sees what was wrong.
func explain(f *flag.Flag, s string, err error) error {
	g, ok := f.Value.(flag.Getter)
	if !ok || (err.Error() != "parse error" && err.Error() != "value out of range") {
		return err
	}
	switch g.Get().(type) {
	case time.Duration:
		if _, perr := time.ParseDuration(s); perr != nil {
			return perr
		}
	case bool:
		return fmt.Errorf("want true or false, got %q", s)
	case int, int64, uint, uint64, float64:
		if err.Error() == "value out of range" {
			return fmt.Errorf("%q is out of range", s)
		}
		return fmt.Errorf("want a number, got %q", s)
	}
	return err
}

// suggest returns ` (did you mean "x"?)` for the flag name nearest to a misspelt key, or
// "" when none is near.
func suggest(fs *flag.FlagSet, key string, reserved []string) string {
	best, bestD := "", min(2, len(key)/3+1)+1
	fs.VisitAll(func(f *flag.Flag) {
		if d := distance(key, f.Name); d < bestD && !slices.Contains(reserved, f.Name) {
			best, bestD = f.Name, d
		}
	})
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// distance is the optimal string alignment distance of a and b: the edits (insertion,
// deletion, substitution, swap of neighbours) that turn one into the other.
func distance(a, b string) int {
	prev2, prev, cur := make([]int, len(b)+1), make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
