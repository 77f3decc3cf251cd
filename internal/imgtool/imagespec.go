package imgtool

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/qemuopt"
)

// imageSpec is what an image argument names once its syntax is read: a
// plain path, "file:PATH", "json:{...}" (QEMU's JSON pseudo-protocol) or,
// with --image-opts, "driver=FMT,file.filename=PATH,...".
type imageSpec struct {
	path   string
	format string // "" probes
	opts   block.Options
}

// maxSpecLen bounds a json: or --image-opts argument (qemuopt's limit).
const maxSpecLen = qemuopt.MaxOptionLen

// parseImageSpec reads arg. imageOpts is --image-opts. Every key is either
// honoured or refused: an option petrel img cannot apply is an error,
// never silently dropped.
func parseImageSpec(arg string, imageOpts bool) (imageSpec, error) {
	var o *qemuopt.Opts
	var err error
	switch {
	case imageOpts:
		if o, err = qemuopt.Parse("--image-opts", arg, ""); err != nil {
			return imageSpec{}, err
		}
	case strings.HasPrefix(arg, "json:"):
		if len(arg) > maxSpecLen {
			return imageSpec{}, fmt.Errorf("json: filename of %d bytes is too long", len(arg))
		}
		var m map[string]any
		text, ok := doubleQuoted(arg[len("json:"):])
		dec := json.NewDecoder(strings.NewReader(text))
		dec.UseNumber()
		if err := dec.Decode(&m); !ok || err != nil || m == nil || dec.More() {
			return imageSpec{}, fmt.Errorf("Could not parse the JSON options")
		}
		// "backing": null opens without the backing file.
		noBacking := false
		if v, ok := m["backing"]; ok && v == nil {
			delete(m, "backing")
			noBacking = true
		}
		if o, err = qemuopt.FromJSON("json:", m); err != nil {
			return imageSpec{}, err
		}
		s, err := specFromOpts(o)
		s.opts.NoBacking = s.opts.NoBacking || noBacking
		return s, err
	case strings.HasPrefix(arg, "file:"):
		if arg == "file:" {
			return imageSpec{}, fmt.Errorf("The 'file' block driver requires a file name")
		}
		return imageSpec{path: arg[len("file:"):]}, nil
	default:
		return imageSpec{path: arg}, nil
	}
	return specFromOpts(o)
}

// specFromOpts reads the flattened options of a json: filename or of
// --image-opts.
func specFromOpts(o *qemuopt.Opts) (imageSpec, error) {
	var s imageSpec
	driver := o.Str("driver")
	prefix := "file."
	switch driver {
	case "":
		return s, fmt.Errorf("Parameter 'driver' is missing")
	case "file", "host_device":
		// The protocol node alone: its bytes are the disk (raw).
		prefix, s.format = "", "raw"
	default:
		// A format driver over a file: anything else (null-co, nbd,
		// blkdebug, ...) is a driver petrel img does not have, refused
		// by name rather than opened as something else.
		if _, ok := block.Lookup(driver); !ok {
			return s, fmt.Errorf("Unknown driver '%s' (petrel img opens qcow2, qed, raw over files)", driver)
		}
		s.format = driver
		if f, ok := o.Lookup("file"); ok && !o.Has("file.driver") {
			if f == "" {
				return s, fmt.Errorf("Parameter 'file' is missing")
			}
			return s, fmt.Errorf("Cannot find device='' nor node-name='%s' (petrel img opens files, not block nodes)", f)
		}
		switch d := o.Str("file.driver"); d {
		case "", "file", "host_device":
		default:
			return s, fmt.Errorf("Unknown protocol driver '%s' (petrel img opens files)", d)
		}
	}
	// The file name and the open options that map onto block.Options;
	// both the format level and the file level may say cache.*.
	s.path = o.Str(prefix + "filename")
	if s.path == "" {
		return s, fmt.Errorf("The '%s' block driver requires a file name", map[bool]string{true: "file", false: driver}[prefix == ""])
	}
	var err error
	if s.opts.ReadOnly, err = o.Bool("read-only", false); err != nil {
		return s, err
	}
	for _, k := range []string{"cache.direct", prefix + "cache.direct"} {
		if on, err := o.Bool(k, false); err != nil {
			return s, err
		} else if on {
			s.opts.DirectIO = true
		}
	}
	for _, k := range []string{"cache.no-flush", prefix + "cache.no-flush"} {
		if on, err := o.Bool(k, false); err != nil {
			return s, err
		} else if on {
			s.opts.NoSync = true
		}
	}
	// The secret ids that unlock an encrypted image and its backing file
	// (qcow2's encrypt.key-secret, the luks driver's key-secret).
	for _, k := range []string{"encrypt.key-secret", "key-secret"} {
		if v, ok := o.Lookup(k); ok {
			s.opts.KeySecret = v
		}
	}
	for _, k := range []string{"backing.encrypt.key-secret", "backing.key-secret"} {
		if v, ok := o.Lookup(k); ok {
			s.opts.BackingKeySecret = v
		}
	}
	// The backing file given in the options replaces the one the image
	// names (over a file only).
	s.opts.BackingFormat, _ = o.Lookup("backing.driver")
	s.opts.BackingOverride, _ = o.Lookup("backing.file.filename")
	if d, ok := o.Lookup("backing.file.driver"); ok && d != "file" {
		return s, fmt.Errorf("Unknown protocol driver '%s' (petrel img opens files)", d)
	}
	// Petrel takes no image locks, so locking=off and auto are what it does.
	if v, ok := o.Lookup(prefix + "locking"); ok && v != "off" && v != "auto" {
		return s, fmt.Errorf("Parameter 'locking': petrel img does not lock images")
	}
	// aio=threads is how Petrel's engines do I/O.
	if v, ok := o.Lookup(prefix + "aio"); ok && v != "threads" {
		return s, fmt.Errorf("Parameter 'aio': only 'threads' is supported, not '%s'", v)
	}
	if err := o.Unused("Block format '" + driver + "' does not support the option '%s'"); err != nil {
		return s, err
	}
	return s, nil
}

// filePath is the file an image argument names, as qemu-img prints it
// ("image:" lines); arg itself when it cannot be read. A relative name
// that file: kept from reading as a protocol ("file:image:top.qcow2")
// is shown as "./image:top.qcow2", as QEMU's file driver names it
// (iotest 126).
func (t *tool) filePath(arg string) string {
	if t.imageOpts || strings.HasPrefix(arg, "json:") || strings.HasPrefix(arg, "file:") {
		if s, err := parseImageSpec(arg, t.imageOpts); err == nil {
			if strings.HasPrefix(arg, "file:") && hasProtocol(s.path) {
				return "./" + s.path
			}
			if s.opts.KeySecret != "" {
				return keyedFilename(s)
			}
			return s.path
		}
	}
	return arg
}

// keyedFilename is the name QEMU gives an image opened with a key
// secret: the secret is an option a plain file name cannot carry, so
// bdrv_refresh_filename makes it a json: name (iotest 198).
func keyedFilename(s imageSpec) string {
	key := "encrypt.key-secret"
	if s.format == "luks" {
		key = "key-secret"
	}
	q := func(v string) string { b, _ := json.Marshal(v); return string(b) }
	return fmt.Sprintf(`json:{%s: %s, "driver": %s, "file": {"driver": "file", "filename": %s}}`, q(key), q(s.opts.KeySecret), q(s.format), q(s.path))
}

// hasProtocol is QEMU's path_has_protocol: a colon before any slash
// makes "proto:" a protocol prefix rather than part of a file name.
func hasProtocol(name string) bool {
	i := strings.IndexAny(name, ":/")
	return i >= 0 && name[i] == ':'
}

// pathCombine is QEMU's path_combine, the "actual path" of a backing
// file qemu-img info prints: a relative name is appended to the image's
// name up to its last slash, as written and not cleaned ("dir/./b"),
// and stays as it is when the image's name has no slash (iotest 126).
func pathCombine(image, name string) string {
	if name == "" || strings.HasPrefix(name, "/") || hasProtocol(name) {
		return name
	}
	i := strings.LastIndexByte(image, '/')
	if i < 0 {
		return name
	}
	return image[:i+1] + name
}

// doubleQuoted rewrites QEMU's JSON extension, strings in single quotes
// ('driver': 'qcow2', as iotests write them; qobject/json-lexer.c), as
// standard double-quoted strings; \' inside one is a quote. ok is false
// for a string left open.
func doubleQuoted(s string) (out string, ok bool) {
	if !strings.Contains(s, "'") {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"': // a standard string goes through as it is
			j := i + 1
			for ; j < len(s) && s[j] != '"'; j++ {
				if s[j] == '\\' {
					j++
				}
			}
			if j >= len(s) {
				return "", false
			}
			b.WriteString(s[i : j+1])
			i = j
		case '\'':
			b.WriteByte('"')
			j := i + 1
			for ; j < len(s) && s[j] != '\''; j++ {
				switch {
				case s[j] == '\\' && j+1 < len(s) && s[j+1] == '\'':
					b.WriteByte('\'')
					j++
				case s[j] == '\\' && j+1 < len(s):
					b.WriteString(s[j : j+2])
					j++
				case s[j] == '"':
					b.WriteString(`\"`)
				default:
					b.WriteByte(s[j])
				}
			}
			if j >= len(s) {
				return "", false
			}
			b.WriteByte('"')
			i = j
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String(), true
}
