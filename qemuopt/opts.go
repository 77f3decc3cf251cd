// Package qemuopt reads QEMU-style options into typed specs: the strings of
// -device, -drive, -blockdev, -object and -chardev (QemuOpts: "a,k=v,k2=v2"
// with ",," for a literal comma, and the keyval/JSON forms of -blockdev),
// and the arguments of QMP device_add and blockdev-add. A command-line
// string and a QMP argument object go through the same Opts, so both
// produce the same spec for the same settings.
//
// The value syntaxes are QEMU's: sizes (qemu_strtosz: 4096, 4K, 1.5G),
// booleans (on/off, yes/no, true/false), PCI addresses (SLOT[.FN] in hex,
// or a devfn number in QMP).
//
// Nothing here opens a file or touches the machine: a spec is checked for
// what can be checked from its text (known keys, value syntax, required
// keys); the machine checks the rest (a node that exists, a free slot).
package qemuopt

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Split splits a QEMU option string at commas; ",," is a literal comma.
// It never fails: "" is one empty item, and a trailing comma gives a last
// empty item, which Parse then refuses as an empty option name.
func Split(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	return append(out, cur.String())
}

// Opts is a set of key=value options as QEMU's QemuOpts holds them. Keys
// are taken by the typed parsers as they read them; Unused reports the
// rest, so an option nobody reads is an error, never silently ignored.
type Opts struct {
	// vals holds each key's raw text; nested QMP objects appear under
	// dotted keys ("file.filename").
	vals map[string]string
	// used records the keys a parser has taken (Str, Lookup and the typed
	// getters set it; Has does not), whether or not they were given.
	used map[string]bool
	// what names the option in errors ("-device", "device_add").
	what string
}

// MaxOptionLen bounds an option string or a flattened QMP object: a
// command line or a QMP message is small, and the parser must not be a way
// to make the VMM allocate without bound.
const MaxOptionLen = 64 << 10

// Parse reads "first,k=v,..." . When implied is not empty, a first item
// without '=' is the value of that key (QEMU's implied option name: the
// driver of -device, the type of -object, the backend of -chardev). A bare
// "k" later on is k=on, as QemuOpts reads "share" in
// "memory-backend-file,share,...". A key given twice is refused.
func Parse(what, s, implied string) (*Opts, error) {
	if len(s) > MaxOptionLen {
		return nil, fmt.Errorf("%s: option string of %d bytes is too long", what, len(s))
	}
	o := &Opts{vals: map[string]string{}, used: map[string]bool{}, what: what}
	for i, p := range Split(s) {
		k, v, ok := strings.Cut(p, "=")
		switch {
		case !ok && i == 0 && implied != "":
			k, v = implied, p
		case !ok:
			v = "on"
		}
		if err := o.set(k, v); err != nil {
			return nil, fmt.Errorf("%s %q: %w", what, s, err)
		}
	}
	return o, nil
}

// set stores k=v; a second value for the same key is an error rather
// than QemuOpts' "last one wins", so that a mistyped repetition on a long
// command line is not silently dropped.
func (o *Opts) set(k, v string) error {
	if k == "" {
		return fmt.Errorf("empty option name")
	}
	if _, dup := o.vals[k]; dup {
		return fmt.Errorf("option %q given twice", k)
	}
	o.vals[k] = v
	return nil
}

// FromJSON reads a QMP argument object (or the JSON form of -blockdev):
// nested objects become dotted keys ("file": {"filename": F} is
// "file.filename"), booleans become on/off, numbers their decimal text,
// and array items are numbered keys as QEMU's keyval flattens them
// ("inject-error": [{"event": E}] is "inject-error.0.event"; see
// ListLen). Nulls are refused.
func FromJSON(what string, args map[string]any) (*Opts, error) {
	o := &Opts{vals: map[string]string{}, used: map[string]bool{}, what: what}
	size := 0
	var walk func(prefix string, m map[string]any) error
	walk = func(prefix string, m map[string]any) error {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys) // errors name the same key on every run
		for _, k := range keys {
			name := prefix + k
			var v string
			switch x := m[k].(type) {
			case map[string]any:
				if err := walk(name+".", x); err != nil {
					return err
				}
				continue
			case []any:
				items := make(map[string]any, len(x))
				for i, item := range x {
					items[strconv.Itoa(i)] = item
				}
				if err := walk(name+".", items); err != nil {
					return err
				}
				continue
			case string:
				v = x
			case bool:
				v = "off"
				if x {
					v = "on"
				}
			case json.Number:
				v = x.String()
			case float64:
				// From a caller that decoded without UseNumber; 'f'
				// keeps large integers free of an exponent.
				v = strconv.FormatFloat(x, 'f', -1, 64)
			default:
				return fmt.Errorf("Invalid parameter type for '%s'", name)
			}
			if size += len(name) + len(v); size > MaxOptionLen {
				return fmt.Errorf("arguments too long")
			}
			if err := o.set(name, v); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk("", args); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return o, nil
}

// Has reports whether k was given (without taking it: a key only tested
// with Has still counts as unused).
func (o *Opts) Has(k string) bool { _, ok := o.vals[k]; return ok }

// ListLen is the number of items of list k: keys "k.0...", "k.1..." up
// to the first missing index (as QEMU's keyval, a list is numbered from 0
// without gaps; an item past a gap stays unused and so is reported).
func (o *Opts) ListLen(k string) int {
	present := map[int]bool{}
	for key := range o.vals {
		rest, ok := strings.CutPrefix(key, k+".")
		if !ok {
			continue
		}
		idx, _, _ := strings.Cut(rest, ".")
		if i, err := strconv.Atoi(idx); err == nil && i >= 0 {
			present[i] = true
		}
	}
	n := 0
	for present[n] {
		n++
	}
	return n
}

// Str takes k's value ("" when absent).
func (o *Opts) Str(k string) string {
	o.used[k] = true
	return o.vals[k]
}

// Lookup takes k's value and says whether it was given.
func (o *Opts) Lookup(k string) (string, bool) {
	o.used[k] = true
	v, ok := o.vals[k]
	return v, ok
}

// Bool takes k as a boolean, def when absent.
func (o *Opts) Bool(k string, def bool) (bool, error) {
	v, ok := o.Lookup(k)
	if !ok {
		return def, nil
	}
	b, err := ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("Parameter '%s' expects 'on' or 'off': %w", k, err)
	}
	return b, nil
}

// Int takes k as an integer in [lo, hi], def when absent.
func (o *Opts) Int(k string, def, lo, hi int) (int, error) {
	v, ok := o.Lookup(k)
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 0, 64)
	if err != nil {
		return 0, fmt.Errorf("Parameter '%s' expects an integer, not %q", k, v)
	}
	if n < int64(lo) || n > int64(hi) {
		return 0, fmt.Errorf("Parameter '%s' is %d, want %d..%d", k, n, lo, hi)
	}
	return int(n), nil
}

// Size takes k as a size in bytes (0 when absent).
func (o *Opts) Size(k string) (uint64, error) {
	v, ok := o.Lookup(k)
	if !ok {
		return 0, nil
	}
	n, err := ParseSize(v)
	if err != nil {
		return 0, fmt.Errorf("Parameter '%s': %w", k, err)
	}
	return n, nil
}

// Unused returns an error naming the first (in sorted order) key no parser
// took, in the wording prefix gives ("Property 'virtio-blk-pci.%s' not
// found"); "" means "unknown option %q".
func (o *Opts) Unused(format string) error {
	var left []string
	for k := range o.vals {
		if !o.used[k] {
			left = append(left, k)
		}
	}
	if len(left) == 0 {
		return nil
	}
	// Map order is random; sorting makes the error name the same key on
	// every run, which tests and golden outputs rely on.
	sort.Strings(left)
	if format == "" {
		format = "unknown option '%s'"
	}
	return fmt.Errorf(format, left[0])
}

// ParseBool reads QEMU's booleans: on/yes/true/y and off/no/false/n (and
// Petrel's older 1/0).
func ParseBool(v string) (bool, error) {
	switch v {
	case "on", "yes", "true", "y", "1":
		return true, nil
	case "off", "no", "false", "n", "0":
		return false, nil
	}
	return false, fmt.Errorf("%q is not on or off", v)
}

// Slots on a PCI bus and functions per slot (PCI Local Bus 3.0, 3.2.2.3.2).
const (
	PCISlots     = 32 // device numbers 0-31: 5 bits of the devfn
	PCIFunctions = 8  // function numbers 0-7: the low 3 bits of the devfn
)

// ParsePCIAddr reads a PCI "addr" property as QEMU's pci-devfn type does:
// "SLOT[.FN]" in hex ("5", "0x5", "05.0", "1f.0"). It returns the slot and
// the function.
func ParsePCIAddr(s string) (slot, fn int, err error) {
	slotStr, fnStr, hasFn := strings.Cut(s, ".")
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(slotStr), "0x"), 16, 8)
	if err != nil || n >= PCISlots {
		return 0, 0, fmt.Errorf("Property 'addr' has invalid value '%s': slot must be 0x0..0x1f", s)
	}
	if hasFn {
		f, err := strconv.ParseUint(fnStr, 16, 8)
		if err != nil || f >= PCIFunctions {
			return 0, 0, fmt.Errorf("Property 'addr' has invalid value '%s': function must be 0..7", s)
		}
		fn = int(f)
	}
	return int(n), fn, nil
}
