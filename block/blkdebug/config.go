package blkdebug

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/qemuopt"
)

// Config is a blkdebug node's rules and limits.
type Config struct {
	rules []*rule
	// Align is the request alignment (align=), 0 when not given; the
	// other limits are accepted for QEMU compatibility and checked, but
	// Petrel's engines issue whole requests anyway.
	Align int64
}

// maxConfigFile bounds a rules file: a blkdebug configuration is a few
// sections, so anything larger is a wrong file, not one to read whole.
const maxConfigFile = 1 << 20

// ReadConfigFile reads the rules of a blkdebug configuration file (QEMU's
// -readconfig syntax: [inject-error] and [set-state] sections of
// key = "value" lines, # comments).
func ReadConfigFile(path string) (*Config, error) {
	// O_NONBLOCK: a FIFO named as the config must not hang the open;
	// anything but a regular file is refused below.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("Could not read blkdebug config file: %s", Strerror(errnoOf(err)))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("blkdebug config %s is not a regular file", path)
	}
	if st.Size() > maxConfigFile {
		return nil, fmt.Errorf("blkdebug config file %s is larger than %d bytes", path, maxConfigFile)
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("Could not read blkdebug config file: %v", err)
	}
	return ParseConfig(data)
}

// errnoOf is the errno an open failed with (EIO when it carries none).
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

// ParseConfig reads a configuration file's text (see ReadConfigFile).
func ParseConfig(data []byte) (*Config, error) {
	var rules []*rule
	var kind string
	var vals map[string]string
	flush := func() error {
		if kind == "" {
			return nil
		}
		r, err := newRule(kind, func(k string) (string, bool) { v, ok := vals[k]; delete(vals, k); return v, ok })
		if err != nil {
			return err
		}
		for k := range vals {
			return fmt.Errorf("Invalid parameter '%s'", k)
		}
		rules = append(rules, r)
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), maxConfigFile)
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			if err := flush(); err != nil {
				return nil, err
			}
			name, ok := strings.CutSuffix(line[1:], "]")
			if !ok || (name != "inject-error" && name != "set-state") {
				return nil, fmt.Errorf("blkdebug config line %d: there is no option group '%s'", lineNo, strings.TrimSuffix(line[1:], "]"))
			}
			kind, vals = name, map[string]string{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || kind == "" {
			return nil, fmt.Errorf("blkdebug config line %d: parse error", lineNo)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		vals[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return &Config{rules: rules}, nil
}

// newRule builds a rule of kind ("inject-error" or "set-state") from its
// keys; get takes one key's value.
func newRule(kind string, get func(string) (string, bool)) (*rule, error) {
	r := &rule{offset: -1, ioTypes: defaultIOTypes, errno: syscall.EIO}
	name, ok := get("event")
	if !ok {
		return nil, fmt.Errorf("Missing event name for rule")
	}
	if r.event, ok = block.ParseDebugEvent(name); !ok {
		return nil, fmt.Errorf("Invalid event name \"%s\"", name)
	}
	num := func(k string, def int64) (int64, error) {
		v, ok := get(k)
		if !ok {
			return def, nil
		}
		n, err := strconv.ParseInt(v, 0, 64)
		if err != nil {
			return 0, fmt.Errorf("Parameter '%s' expects a number", k)
		}
		return n, nil
	}
	flag := func(k string) (bool, error) {
		v, ok := get(k)
		if !ok {
			return false, nil
		}
		b, err := qemuopt.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("Parameter '%s' expects 'on' or 'off'", k)
		}
		return b, nil
	}
	state, err := num("state", 0)
	if err != nil {
		return nil, err
	}
	if state < 0 || state > 1<<31-1 {
		return nil, fmt.Errorf("Parameter 'state' is out of range")
	}
	r.state = int(state)
	switch kind {
	case "set-state":
		n, err := num("new_state", 0)
		if err != nil {
			return nil, err
		}
		if n < 0 || n > 1<<31-1 {
			return nil, fmt.Errorf("Parameter 'new_state' is out of range")
		}
		r.newState = int(n)
		return r, nil
	case "inject-error":
	default:
		return nil, fmt.Errorf("unknown blkdebug rule kind %q", kind)
	}
	r.inject = true
	errno, err := num("errno", int64(syscall.EIO))
	if err != nil {
		return nil, err
	}
	if errno < 0 || errno > 4095 {
		return nil, fmt.Errorf("Parameter 'errno' is out of range")
	}
	r.errno = syscall.Errno(errno)
	sector, err := num("sector", -1)
	if err != nil {
		return nil, err
	}
	if sector >= 0 {
		if sector > 1<<54 {
			return nil, fmt.Errorf("Parameter 'sector' is out of range")
		}
		r.offset = sector * 512
	}
	if r.once, err = flag("once"); err != nil {
		return nil, err
	}
	if r.immediately, err = flag("immediately"); err != nil {
		return nil, err
	}
	if v, ok := get("iotype"); ok {
		t, ok := ioTypeNames[v]
		if !ok {
			return nil, fmt.Errorf("Invalid I/O type \"%s\"", v)
		}
		r.ioTypes = 1 << t
	}
	return r, nil
}

// FromOpts reads a blkdebug node's options from o under prefix ("" for
// the top node, "file." under a format): config (a rules file),
// inject-error.N.* and set-state.N.* lists, and the request limits. The
// child (image.*) is the caller's.
func FromOpts(o *qemuopt.Opts, prefix string) (*Config, error) {
	c := &Config{}
	if path, ok := o.Lookup(prefix + "config"); ok {
		file, err := ReadConfigFile(path)
		if err != nil {
			return nil, err
		}
		c.rules = file.rules
	}
	for _, kind := range []string{"inject-error", "set-state"} {
		list := prefix + kind
		for i, n := 0, o.ListLen(list); i < n; i++ {
			item := fmt.Sprintf("%s.%d.", list, i)
			r, err := newRule(kind, func(k string) (string, bool) { return o.Lookup(item + k) })
			if err != nil {
				return nil, err
			}
			c.rules = append(c.rules, r)
		}
	}
	align, err := o.Size(prefix + "align")
	if err != nil {
		return nil, err
	}
	if align != 0 && (align&(align-1) != 0 || align > 1<<30) {
		return nil, fmt.Errorf("Cannot meet constraints with align %d", align)
	}
	c.Align = int64(align)
	for _, k := range []string{"max-transfer", "opt-write-zero", "max-write-zero", "opt-discard", "max-discard"} {
		v, err := o.Size(prefix + k)
		if err != nil {
			return nil, err
		}
		if align != 0 && v%align != 0 {
			return nil, fmt.Errorf("Cannot meet constraints with %s %d", k, v)
		}
	}
	return c, nil
}

// ConfigFromFile is the configuration of "blkdebug:PATH:IMAGE" (PATH may
// be empty: no rules).
func ConfigFromFile(path string) (*Config, error) {
	if path == "" {
		return &Config{}, nil
	}
	return ReadConfigFile(path)
}
