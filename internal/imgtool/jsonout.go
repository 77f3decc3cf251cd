package imgtool

import (
	"bytes"
	"encoding/json"
	"regexp"
	"sort"
)

// object is a JSON object that keeps its key order (qemu-img's output is
// easier to read, and to diff, with a stable order).
type object []field

// field is one key of an object with its value (any value encoding/json
// takes; map[string]any values are put in QEMU's key order by normalize).
type field struct {
	key string
	val any
}

// set replaces the value of k, or appends k at the end: the order of
// first setting is the order of output.
func (o *object) set(k string, v any) {
	for i := range *o {
		if (*o)[i].key == k {
			(*o)[i].val = v
			return
		}
	}
	*o = append(*o, field{k, v})
}

// MarshalJSON writes the keys in their order; prettyJSON re-indents the
// result.
func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.key)
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(normalize(f.val))
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// normalize turns map[string]any into a sorted object, recursively.
func normalize(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	// qcow2's format-specific keys in QEMU's order, the rest sorted.
	keys := orderedKeys(m)
	// "type" first, as in qemu's format-specific union.
	sort.SliceStable(keys, func(i, j int) bool { return keys[i] == "type" && keys[j] != "type" })
	o := object{}
	for _, k := range keys {
		o = append(o, field{k, normalize(m[k])})
	}
	return o
}

// prettyJSON renders v as qemu-img does: 4-space indentation.
func prettyJSON(v any) string {
	raw, err := json.Marshal(v)
	if err != nil {
		return "{}"
	}
	var b bytes.Buffer
	json.Indent(&b, raw, "", "    ")
	return emptyContainers.ReplaceAllString(b.String(), "$1$2$3\n$1$4$5")
}

// emptyContainers matches a line ending in an empty array or object,
// which QEMU's JSON writer spreads over two lines, the closing bracket
// indented as the line that opens it (qemu-img info's empty bitmap
// "flags"). Only a line whose value is the container matches, never one
// whose string ends in brackets.
var emptyContainers = regexp.MustCompile(`(?m)^( *)((?:"(?:[^"\\]|\\.)*": )?)([\[{])([\]}])(,?)$`)
