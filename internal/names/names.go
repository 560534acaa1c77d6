// Package names checks the names that travel between agents, controllers and users: node ids,
// deployment and profile names, labels. Each error names what was wrong so that handlers can
// pass it on as it is.
package names

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
)

var (
	dnsLabel  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	nodeID    = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$`)
	profile   = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$`)
	labelKey  = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9._/]*[A-Za-z0-9])?$`)
	labelVal  = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?)?$`)
	instance  = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$`)
	maxLabels = 64
)

// Length limits.
const (
	MaxDeploymentName = 63
	MaxNodeID         = 253
	MaxProfile        = 128
	MaxLabelKey       = 128
	MaxLabelValue     = 63
	MaxInstanceID     = 128
)

// DeploymentName checks a deployment name: lowercase letters, digits and '-', 1-63 characters,
// starting and ending alphanumeric (a DNS label, so it can name hosts and files later).
func DeploymentName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("is empty")
	case len(s) > MaxDeploymentName:
		return fmt.Errorf("is %d characters, at most %d allowed", len(s), MaxDeploymentName)
	case !dnsLabel.MatchString(s):
		return fmt.Errorf("%q must be lowercase letters, digits and '-', starting and ending with a letter or digit", s)
	}
	return nil
}

// NodeID checks a node id: a host name or similar, 1-253 characters of letters, digits, '-', '.', '_'.
func NodeID(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("is empty")
	case len(s) > MaxNodeID:
		return fmt.Errorf("is %d characters, at most %d allowed", len(s), MaxNodeID)
	case !nodeID.MatchString(s):
		return fmt.Errorf("%q must be letters, digits, '-', '.' and '_', starting and ending with a letter or digit", s)
	}
	return nil
}

// InstanceID checks an instance id. An agent names the instance's log file and state after
// it, so the rule keeps it one plain file name: 1-128 letters, digits, '-', '.' and '_',
// starting and ending with a letter or digit, never "..", so no path separator and no way out
// of the agent's directories.
func InstanceID(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("is empty")
	case len(s) > MaxInstanceID:
		return fmt.Errorf("is %d characters, at most %d allowed", len(s), MaxInstanceID)
	case !instance.MatchString(s) || strings.Contains(s, ".."):
		return fmt.Errorf("%.80q must be letters, digits, '-', '.' and '_', starting and ending with a letter or digit, without \"..\"", s)
	}
	return nil
}

// Profile checks a catalog profile name.
func Profile(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("is empty")
	case len(s) > MaxProfile:
		return fmt.Errorf("is %d characters, at most %d allowed", len(s), MaxProfile)
	case !profile.MatchString(s):
		return fmt.Errorf("%q must be letters, digits, '-', '.' and '_', starting and ending with a letter or digit", s)
	}
	return nil
}

// Labels checks a label set. The error names the offending key: the first in sorted
// order, so that the same set always gets the same answer.
func Labels(m map[string]string) error {
	if len(m) > maxLabels {
		return fmt.Errorf("has %d entries, at most %d allowed", len(m), maxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		switch {
		case k == "":
			return fmt.Errorf("has an empty key")
		case len(k) > MaxLabelKey || !labelKey.MatchString(k):
			return fmt.Errorf("key %.40q must be 1-%d letters, digits, '-', '.', '_' and '/', starting and ending with a letter or digit", k, MaxLabelKey)
		case len(v) > MaxLabelValue || !labelVal.MatchString(v):
			return fmt.Errorf("[%q]: value %.40q must be at most %d letters, digits, '-', '.' and '_', starting and ending with a letter or digit", k, v, MaxLabelValue)
		}
	}
	return nil
}
