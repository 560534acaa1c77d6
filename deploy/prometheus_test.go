//go:build linux

package deploy_test

import (
	"bytes"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// promConfig is the part of Prometheus's configuration that prometheus.yml uses. Decoding
// with known fields only catches a misspelt key, which Prometheus would refuse.
type promConfig struct {
	Global struct {
		ScrapeInterval     string `yaml:"scrape_interval"`
		ScrapeTimeout      string `yaml:"scrape_timeout"`
		EvaluationInterval string `yaml:"evaluation_interval"`
	} `yaml:"global"`
	ScrapeConfigs []struct {
		JobName        string `yaml:"job_name"`
		ScrapeInterval string `yaml:"scrape_interval"`
		MetricsPath    string `yaml:"metrics_path"`
		StaticConfigs  []struct {
			Targets []string          `yaml:"targets"`
			Labels  map[string]string `yaml:"labels"`
		} `yaml:"static_configs"`
		RelabelConfigs []relabel `yaml:"relabel_configs"`
	} `yaml:"scrape_configs"`
}

// relabel is one relabel_configs rule of the default action, replace.
type relabel struct {
	SourceLabels []string `yaml:"source_labels"`
	Separator    string   `yaml:"separator"`
	Regex        string   `yaml:"regex"`
	TargetLabel  string   `yaml:"target_label"`
	Replacement  string   `yaml:"replacement"`
}

// apply runs the rule on labels as Prometheus does: the source values joined, the regex
// anchored at both ends, the target set to the expanded replacement on a match.
func (r relabel) apply(t *testing.T, labels map[string]string) {
	t.Helper()
	var vals []string
	for _, l := range r.SourceLabels {
		vals = append(vals, labels[l])
	}
	re, err := regexp.Compile("^(?:" + r.Regex + ")$")
	if err != nil {
		t.Fatalf("relabel regex %q: %v", r.Regex, err)
	}
	m := re.FindStringSubmatchIndex(strings.Join(vals, r.Separator))
	if m == nil {
		return
	}
	labels[r.TargetLabel] = string(re.ExpandString(nil, r.Replacement, strings.Join(vals, r.Separator), m))
}

func readPromConfig(t *testing.T) promConfig {
	t.Helper()
	b, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c promConfig
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	return c
}

// TestPrometheusConfig checks the scrape configuration: one job per daemon, an interval
// between 5 s and 15 s, and a node label on every agent target, which the dashboard's node
// variable reads.
func TestPrometheusConfig(t *testing.T) {
	c := readPromConfig(t)
	var jobs []string
	for _, sc := range c.ScrapeConfigs {
		jobs = append(jobs, sc.JobName)
		interval := sc.ScrapeInterval
		if interval == "" {
			interval = c.Global.ScrapeInterval
		}
		d, err := time.ParseDuration(interval)
		if err != nil || d < 5*time.Second || d > 15*time.Second {
			t.Errorf("%s: scrape interval %q (%v), want 5s to 15s", sc.JobName, interval, err)
		}
		if timeout, err := time.ParseDuration(c.Global.ScrapeTimeout); err != nil || timeout > d {
			t.Errorf("%s: scrape_timeout %q longer than the interval %v (%v)", sc.JobName, c.Global.ScrapeTimeout, d, err)
		}
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
			t.Errorf("%s: metrics_path %q; the daemons serve /metrics", sc.JobName, sc.MetricsPath)
		}
		if len(sc.StaticConfigs) == 0 {
			t.Errorf("%s: no static_configs example", sc.JobName)
		}
		if sc.JobName != "llmscaler-agent" {
			continue
		}
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				labels := map[string]string{"__address__": target}
				for k, v := range st.Labels {
					labels[k] = v
				}
				for _, r := range sc.RelabelConfigs {
					r.apply(t, labels)
				}
				want := st.Labels["node"]
				if want == "" {
					want, _, _ = net.SplitHostPort(target)
				}
				if labels["node"] != want {
					t.Errorf("agent target %s gets node=%q, want %q (its node label, else its host)", target, labels["node"], want)
				}
			}
		}
	}
	slices.Sort(jobs)
	if want := []string{"llmscaler-agent", "llmscaler-controller", "llmscaler-router"}; !slices.Equal(jobs, want) {
		t.Errorf("jobs %v, want %v", jobs, want)
	}
}

// TestPrometheusTargetsUseDefaultPorts checks every example target against the port the
// daemon serves /metrics on by default.
func TestPrometheusTargetsUseDefaultPorts(t *testing.T) {
	metricsFlag := map[string]string{
		"llmscaler-controller": "http-addr",
		"llmscaler-agent":      "http-addr",
		"llmscaler-router":     "listen",
	}
	for _, sc := range readPromConfig(t).ScrapeConfigs {
		flag, ok := metricsFlag[sc.JobName]
		if !ok {
			t.Errorf("job %s is not one of the daemons", sc.JobName)
			continue
		}
		_, want, err := net.SplitHostPort(flagDefaults(t, sc.JobName)[flag])
		if err != nil {
			t.Fatalf("%s --%s default: %v", sc.JobName, flag, err)
		}
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				if _, port, err := net.SplitHostPort(target); err != nil || port != want {
					t.Errorf("%s target %s: port is not %s, the --%s default (%v)", sc.JobName, target, want, flag, err)
				}
			}
		}
	}
}
