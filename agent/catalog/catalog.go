package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/llmscaler/llmscaler/agent/scrape"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/llmscaler/llmscaler/internal/yamlnode"

	"github.com/llmscaler/llmscaler/internal/names"
)

// Defaults for the optional profile keys.
const (
	DefaultHealthPath     = "/health"
	DefaultMetricsPath    = "/metrics"
	DefaultGPUs           = 1
	DefaultStartupTimeout = 10 * time.Minute
	DefaultDrainTimeout   = 60 * time.Second
	DefaultStopSignal     = syscall.SIGTERM
	DefaultStopGrace      = 30 * time.Second
	DefaultMaxRestarts    = 5
)

// CUDAVisibleDevices is the variable the agent sets to an instance's GPU indices.
const CUDAVisibleDevices = "CUDA_VISIBLE_DEVICES"

// stopSignals are the signals a profile may stop its server with, in the order error messages
// give them.
var stopSignals = []namedSignal{
	{"SIGTERM", syscall.SIGTERM},
	{"SIGINT", syscall.SIGINT},
	{"SIGQUIT", syscall.SIGQUIT},
	{"SIGHUP", syscall.SIGHUP},
	{"SIGUSR1", syscall.SIGUSR1},
	{"SIGUSR2", syscall.SIGUSR2},
}

type namedSignal struct {
	name string
	sig  syscall.Signal
}

// placeholders are the names that may appear in braces in a command argument or env value.
var placeholders = []string{"port", "host", "gpus", "instance_id", "deployment"}

var (
	placeholder = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)\}`)
	envName     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Profile is one way to run a model server. Profiles come from Load and must not be modified.
type Profile struct {
	// Name is the profile's unique name, which the controller's deployments refer to.
	Name string
	// Command is the argv, with placeholders. Command[0] is absolute, or a bare name that
	// is looked up in PATH when an instance starts.
	Command []string
	// Env holds extra environment variables, whose values may use placeholders.
	Env map[string]string
	// Dir is the working directory; "" is the agent's own.
	Dir string
	// HealthPath is the HTTP path that answers 2xx once the server can serve.
	HealthPath string
	// MetricsPath is the HTTP path of the server's Prometheus metrics.
	MetricsPath string
	// Dialect says which metric names the server exposes.
	Dialect scrape.Dialect
	// GPUs is the number of GPUs one instance takes, 0 for a CPU-only server.
	GPUs int
	// GPUMemoryMiB is the free memory an instance needs on each of its GPUs.
	GPUMemoryMiB uint64
	// StartupTimeout bounds the wait for the first healthy answer.
	StartupTimeout time.Duration
	// DrainTimeout bounds the wait for requests in flight when an instance is stopped.
	DrainTimeout time.Duration
	// StopSignal is sent to the server's process group to stop it.
	StopSignal syscall.Signal
	// StopGrace is how long after StopSignal the group is killed with SIGKILL.
	StopGrace time.Duration
	// MaxRestarts is how many times an instance that exits unexpectedly is restarted before
	// it is FAILED.
	MaxRestarts int
	// MaxInFlight is the most requests a router sends one instance at once (its batch, say);
	// beyond it requests wait in the router, where any replica can take them. 0: no cap.
	MaxInFlight int
}

// Catalog is a loaded catalog file. It is read-only and safe for concurrent use.
type Catalog struct {
	profiles map[string]*Profile
}

// Load reads and checks the catalog file at path. Every error names the file and line.
func Load(path string) (*Catalog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read catalog: %w", err)
	}
	return Parse(path, data)
}

// Parse checks a catalog held in data. filename is used in error messages, and relative
// command[0] and dir paths are taken relative to its directory.
func Parse(filename string, data []byte) (*Catalog, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		if n := yamlErrorLine(data, err); n > 0 {
			return nil, fmt.Errorf("%s:%d: %w", filename, n, err)
		}
		return nil, fmt.Errorf("%s: %w", filename, err)
	}
	p := &parser{file: filename, dir: filepath.Dir(filename)}
	c := p.catalog(&doc)
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return c, nil
}

// readerProblems are the decoder's errors for a character it cannot read.
var readerProblems = []string{
	"control characters are not allowed", "invalid leading UTF-8 octet", "incomplete UTF-8 octet sequence",
	"invalid trailing UTF-8 octet", "invalid length of a UTF-8 sequence", "invalid Unicode character",
}

// yamlErrorLine is the line of a decoder error that does not give it, or 0 when it does or
// the line is unknown. The decoder leaves out "line N" for an error on the first line, for
// a character it cannot read, and for an alias of an unknown anchor.
func yamlErrorLine(data []byte, err error) int {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	at := -1
	switch name, alias := strings.CutPrefix(msg, "unknown anchor '"); {
	case strings.HasPrefix(msg, "line "):
		return 0
	case slices.Contains(readerProblems, msg):
		at = unreadable(data)
	case alias:
		// Anchor names are letters, digits, '-' and '_'.
		re := regexp.MustCompile(`\*` + regexp.QuoteMeta(strings.TrimSuffix(name, "' referenced")) + `([^-0-9A-Za-z_]|$)`)
		if loc := re.FindIndex(data); loc != nil {
			at = loc[0]
		}
	default:
		return 1
	}
	if at < 0 {
		return 0
	}
	return lineAt(data, at)
}

// unreadable is the offset of the first character of UTF-8 data that the decoder refuses
// (bad UTF-8, a control character), or -1 when there is none or the data is UTF-16 (which
// the decoder reads after a BOM).
func unreadable(data []byte) int {
	if bytes.HasPrefix(data, []byte("\xff\xfe")) || bytes.HasPrefix(data, []byte("\xfe\xff")) {
		return -1
	}
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size == 1 || r < 0x20 && r != '\t' && r != '\n' && r != '\r' ||
			r >= 0x7f && r < 0xa0 && r != 0x85 || r == 0xfffe || r == 0xffff {
			return i
		}
		i += size
	}
	return -1
}

// lineAt is the line of data[at], counting line breaks as YAML does: LF, CR, CRLF, NEL, LS, PS.
func lineAt(data []byte, at int) int {
	s := strings.ReplaceAll(string(data[:at]), "\r\n", "\n")
	n := 1
	for _, brk := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
		n += strings.Count(s, brk)
	}
	return n
}

// Profile returns the profile called name.
func (c *Catalog) Profile(name string) (*Profile, bool) {
	p, ok := c.profiles[name]
	return p, ok
}

// Names returns the profile names, sorted.
func (c *Catalog) Names() []string {
	return slices.Sorted(maps.Keys(c.profiles))
}

// Vars are the values of the placeholders for one instance.
type Vars struct {
	Port       int      // {port}
	Host       string   // {host}
	GPUs       []uint32 // {gpus}, comma-separated, and CUDA_VISIBLE_DEVICES
	InstanceID string   // {instance_id}
	Deployment string   // {deployment}
}

// Expand fills the placeholders in for one instance. argv is the command line; env holds
// "KEY=value" entries, the profile's env sorted by key and then CUDA_VISIBLE_DEVICES, which is
// always set: to "" when v has no GPUs, so that a CPU-only server sees none.
func (p *Profile) Expand(v Vars) (argv []string, env []string) {
	gpus := make([]string, len(v.GPUs))
	for i, g := range v.GPUs {
		gpus[i] = strconv.FormatUint(uint64(g), 10)
	}
	values := map[string]string{
		"port":        strconv.Itoa(v.Port),
		"host":        v.Host,
		"gpus":        strings.Join(gpus, ","),
		"instance_id": v.InstanceID,
		"deployment":  v.Deployment,
	}
	expand := func(s string) string {
		return placeholder.ReplaceAllStringFunc(s, func(m string) string {
			return values[m[1:len(m)-1]]
		})
	}
	argv = make([]string, len(p.Command))
	argv[0] = p.Command[0]
	for i, a := range p.Command[1:] {
		argv[i+1] = expand(a)
	}
	env = make([]string, 0, len(p.Env)+1)
	for _, k := range slices.Sorted(maps.Keys(p.Env)) {
		env = append(env, k+"="+expand(p.Env[k]))
	}
	env = append(env, CUDAVisibleDevices+"="+values["gpus"])
	return argv, env
}

// parser walks the YAML tree and collects every error it finds.
type parser struct {
	file string
	dir  string
	errs []error
}

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s:%d: %s", p.file, n.Line, fmt.Sprintf(format, args...)))
}

func (p *parser) catalog(doc *yaml.Node) *Catalog {
	c := &Catalog{profiles: map[string]*Profile{}}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		p.errs = append(p.errs, fmt.Errorf("%s: is empty; want a mapping with key \"profiles\"", p.file))
		return c
	}
	root := yamlnode.Resolve(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		p.errorf(root, "want a mapping with key \"profiles\", got %s", yamlnode.KindName(root))
		return c
	}
	var list *yaml.Node
	p.mapping(root, "", func(key string, k, v *yaml.Node) {
		if key != "profiles" {
			p.errorf(k, "unknown key %q; the only key is \"profiles\"", key)
			return
		}
		list = v
	})
	if list == nil || list.ShortTag() == "!!null" {
		p.errorf(root, "missing required key \"profiles\"")
		return c
	}
	if list.Kind != yaml.SequenceNode {
		p.errorf(list, "profiles: want a list, got %s", yamlnode.KindName(list))
		return c
	}
	lines := map[string]int{}
	for i, n := range list.Content {
		prof := p.profile(i, yamlnode.Resolve(n))
		if prof == nil {
			continue
		}
		if first, dup := lines[prof.Name]; dup {
			p.errorf(n, "profiles[%d] %q: duplicate name; the profile at line %d has it too", i, prof.Name, first)
			continue
		}
		lines[prof.Name] = n.Line
		c.profiles[prof.Name] = prof
	}
	return c
}

// mapping calls fn for each key of a mapping node in order, reporting duplicate keys and
// keys that are not strings. where prefixes those errors.
func (p *parser) mapping(n *yaml.Node, where string, fn func(key string, k, v *yaml.Node)) {
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := yamlnode.Resolve(n.Content[i]), yamlnode.Resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			p.errorf(k, "%swant a string key, got %s", where, yamlnode.KindName(k))
			continue
		}
		if seen[k.Value] {
			p.errorf(k, "%sduplicate key %q", where, k.Value)
			continue
		}
		seen[k.Value] = true
		fn(k.Value, k, v)
	}
}

// profile checks one entry of the profiles list. It returns nil when the entry has errors.
func (p *parser) profile(i int, n *yaml.Node) *Profile {
	where := fmt.Sprintf("profiles[%d]: ", i)
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "%swant a mapping, got %s", where, yamlnode.KindName(n))
		return nil
	}
	before := len(p.errs)
	prof := &Profile{
		HealthPath:     DefaultHealthPath,
		MetricsPath:    DefaultMetricsPath,
		GPUs:           DefaultGPUs,
		StartupTimeout: DefaultStartupTimeout,
		DrainTimeout:   DefaultDrainTimeout,
		StopSignal:     DefaultStopSignal,
		StopGrace:      DefaultStopGrace,
		MaxRestarts:    DefaultMaxRestarts,
	}

	// The name goes first, so that every later error can name the profile.
	for j := 0; j+1 < len(n.Content); j += 2 {
		k, v := yamlnode.Resolve(n.Content[j]), yamlnode.Resolve(n.Content[j+1])
		if k.Kind != yaml.ScalarNode || k.Value != "name" || yamlnode.IsNull(v) {
			continue
		}
		name, ok := p.str(v, where, "name")
		if !ok {
			return nil
		}
		if err := names.Profile(name); err != nil {
			p.errorf(v, "%sname %v", where, err)
			return nil
		}
		prof.Name = name
		where = fmt.Sprintf("profiles[%d] %q: ", i, name)
		break
	}

	seen := map[string]bool{}
	p.mapping(n, where, func(key string, k, v *yaml.Node) {
		if yamlnode.IsNull(v) {
			return // an empty value leaves the default
		}
		seen[key] = true
		switch key {
		case "name":
			// Checked above.
		case "command":
			p.command(prof, v, where)
		case "env":
			p.env(prof, v, where)
		case "dir":
			if s, ok := p.str(v, where, key); ok {
				if placeholder.MatchString(s) {
					p.errorf(v, "%sdir: %q may not use placeholders", where, s)
				}
				if s != "" && !filepath.IsAbs(s) {
					s = filepath.Join(p.dir, s)
				}
				prof.Dir = s
			}
		case "health_path":
			prof.HealthPath = p.urlPath(v, where, key)
		case "metrics_path":
			prof.MetricsPath = p.urlPath(v, where, key)
		case "dialect":
			if s, ok := p.str(v, where, key); ok {
				d, err := scrape.ParseDialect(s)
				if err != nil {
					p.errorf(v, "%sdialect: %v", where, err)
				}
				prof.Dialect = d
			}
		case "gpus":
			prof.GPUs = int(p.count(v, where, key))
		case "gpu_memory_mib":
			prof.GPUMemoryMiB = uint64(p.count(v, where, key))
		case "max_restarts":
			prof.MaxRestarts = int(p.count(v, where, key))
		case "max_in_flight":
			prof.MaxInFlight = int(p.count(v, where, key))
		case "startup_timeout":
			if d, ok := p.duration(v, where, key); ok && d == 0 {
				p.errorf(v, "%sstartup_timeout: must be more than 0", where)
			} else {
				prof.StartupTimeout = d
			}
		case "drain_timeout":
			prof.DrainTimeout, _ = p.duration(v, where, key)
		case "stop_grace":
			prof.StopGrace, _ = p.duration(v, where, key)
		case "stop_signal":
			if s, ok := p.str(v, where, key); ok {
				i := slices.IndexFunc(stopSignals, func(e namedSignal) bool { return e.name == s })
				if i < 0 {
					valid := make([]string, len(stopSignals))
					for i, e := range stopSignals {
						valid[i] = e.name
					}
					p.errorf(v, "%sstop_signal: %q is not one of %s", where, s, strings.Join(valid, ", "))
				} else {
					prof.StopSignal = stopSignals[i].sig
				}
			}
		default:
			p.errorf(k, "%sunknown key %q", where, key)
		}
	})
	for _, req := range []string{"name", "command", "dialect"} {
		if !seen[req] {
			p.errorf(n, "%smissing required key %q", where, req)
		}
	}
	if len(p.errs) > before {
		return nil
	}
	return prof
}

func (p *parser) command(prof *Profile, v *yaml.Node, where string) {
	if v.Kind != yaml.SequenceNode {
		p.errorf(v, "%scommand: want a list of strings (argv, no shell), got %s", where, yamlnode.KindName(v))
		return
	}
	if len(v.Content) == 0 {
		p.errorf(v, "%scommand is empty", where)
		return
	}
	for j, a := range v.Content {
		a = yamlnode.Resolve(a)
		key := fmt.Sprintf("command[%d]", j)
		s, ok := p.str(a, where, key)
		if !ok {
			continue
		}
		if j == 0 {
			switch {
			case s == "":
				p.errorf(a, "%scommand[0] is empty", where)
				continue
			case placeholder.MatchString(s):
				p.errorf(a, "%scommand[0]: %q may not use placeholders", where, s)
				continue
			case !filepath.IsAbs(s) && strings.Contains(s, "/"):
				s = filepath.Join(p.dir, s)
			}
		} else {
			p.placeholders(a, s, where, key)
		}
		prof.Command = append(prof.Command, s)
	}
}

func (p *parser) env(prof *Profile, v *yaml.Node, where string) {
	if v.Kind != yaml.MappingNode {
		p.errorf(v, "%senv: want a mapping, got %s", where, yamlnode.KindName(v))
		return
	}
	prof.Env = map[string]string{}
	p.mapping(v, where+"env: ", func(name string, k, val *yaml.Node) {
		key := fmt.Sprintf("env[%s]", name)
		switch {
		case !envName.MatchString(name):
			p.errorf(k, "%senv: %q is not a variable name (letters, digits and '_', not starting with a digit)", where, name)
			return
		case name == CUDAVisibleDevices:
			p.errorf(k, "%senv: %s is set by the agent from the instance's GPUs", where, name)
			return
		}
		if yamlnode.IsNull(val) {
			prof.Env[name] = ""
			return
		}
		s, ok := p.str(val, where, key)
		if !ok {
			return
		}
		p.placeholders(val, s, where, key)
		prof.Env[name] = s
	})
}

func (p *parser) placeholders(n *yaml.Node, s, where, key string) {
	for _, m := range placeholder.FindAllStringSubmatch(s, -1) {
		if !slices.Contains(placeholders, m[1]) {
			known := make([]string, len(placeholders))
			for i, k := range placeholders {
				known[i] = "{" + k + "}"
			}
			p.errorf(n, "%s%s: unknown placeholder %s; known: %s", where, key, m[0], strings.Join(known, ", "))
		}
	}
}

func (p *parser) str(n *yaml.Node, where, key string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		p.errorf(n, "%s%s: want a string, got %s", where, key, yamlnode.KindName(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) urlPath(n *yaml.Node, where, key string) string {
	s, ok := p.str(n, where, key)
	if !ok {
		return ""
	}
	if !strings.HasPrefix(s, "/") {
		p.errorf(n, "%s%s: %q must start with \"/\"", where, key, s)
	}
	return s
}

func (p *parser) count(n *yaml.Node, where, key string) int64 {
	s, ok := p.str(n, where, key)
	if !ok {
		return 0
	}
	i, err := strconv.ParseInt(s, 10, 32)
	switch {
	case err != nil:
		p.errorf(n, "%s%s: %q is not a whole number", where, key, s)
	case i < 0:
		p.errorf(n, "%s%s: %d is negative", where, key, i)
	}
	return i
}

func (p *parser) duration(n *yaml.Node, where, key string) (time.Duration, bool) {
	s, ok := p.str(n, where, key)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		p.errorf(n, "%s%s: %q is not a duration", where, key, s)
		return 0, false
	case d < 0:
		p.errorf(n, "%s%s: %q is negative", where, key, s)
		return 0, false
	}
	return d, true
}
