package flagfile

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// List is a flag.Value for a comma-separated list, such as --controller a:7400,b:7400. A
// config file may give it as a YAML list. Set replaces the whole list; "" empties it.
type List []string

// String returns the list comma-separated.
func (l *List) String() string { return strings.Join(*l, ",") }

// Get returns the list as a []string.
func (l *List) Get() any { return []string(*l) }

// Set parses s, trimming spaces around each element. An empty element is an error: it is
// most likely a stray comma.
func (l *List) Set(s string) error {
	if strings.TrimSpace(s) == "" {
		*l = nil
		return nil
	}
	var out List
	for i, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e == "" {
			return fmt.Errorf("element %d of %q is empty (stray comma?)", i, s)
		}
		out = append(out, e)
	}
	*l = out
	return nil
}

// Map is a flag.Value for key=value pairs, such as --labels zone=a,gpu=h100. A config file
// may give it as a YAML mapping. Set replaces the whole map; "" empties it.
type Map map[string]string

// String returns the pairs as k=v,k=v, sorted by key.
func (m *Map) String() string {
	kv := make([]string, 0, len(*m))
	for _, k := range slices.Sorted(maps.Keys(*m)) {
		kv = append(kv, k+"="+(*m)[k])
	}
	return strings.Join(kv, ",")
}

// Get returns the pairs as a map[string]string.
func (m *Map) Get() any { return map[string]string(*m) }

// Set parses s, trimming spaces around keys and values.
func (m *Map) Set(s string) error {
	out := Map{}
	if strings.TrimSpace(s) == "" {
		*m = out
		return nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch _, dup := out[k]; {
		case !ok:
			return fmt.Errorf("%q is not key=value", kv)
		case k == "":
			return fmt.Errorf("%q has no key", kv)
		case dup:
			return fmt.Errorf("duplicate key %q", k)
		}
		out[k] = v
	}
	*m = out
	return nil
}
