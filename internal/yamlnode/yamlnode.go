// Package yamlnode holds the few helpers the YAML readers (the agent's catalog, the daemons'
// config files) share over yaml.v3's node tree, which they read to report errors by line.
package yamlnode

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

// Resolve follows an alias to the node it names.
func Resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// IsNull reports whether n is an empty value (`key:` or `key: null`).
func IsNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// KindName describes n for an error message: "a mapping", "a list", or a scalar's value quoted.
func KindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	default:
		return "nothing"
	}
}
