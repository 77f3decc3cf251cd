package imgtool

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/block/blkdebug"
	"github.com/petrel-vmm/petrel/block/nbd"
	"github.com/petrel-vmm/petrel/block/null"
	"github.com/petrel-vmm/petrel/qemuopt"
)

// imageSpec is what an image argument names once its syntax is read: a
// plain path, "file:PATH", "json:{...}" (QEMU's JSON pseudo-protocol) or,
// with --image-opts, "driver=FMT,file.filename=PATH,...".
type imageSpec struct {
	path   string
	format string // "" probes
	opts   block.Options
	// open, when set, makes the image instead of a format engine opening
	// path (an NBD export, null-co, blkdebug above an image); it gets the
	// caller's options merged with opts.
	open func(block.Options) (block.Image, error)
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
	case strings.HasPrefix(arg, "blkdebug:"):
		return blkdebugSpec(arg)
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
	s, err := nodeSpec(o, "")
	if err != nil {
		return s, err
	}
	if err := o.Unused("Block format '" + o.Str("driver") + "' does not support the option '%s'"); err != nil {
		return s, err
	}
	return s, nil
}

// nodeSpec reads the node whose options lie under prefix ("" for the top
// node, "image." for blkdebug's child): a format over a file (or over a
// blkdebug node over a file), a file alone, blkdebug over either, or
// null-co.
func nodeSpec(o *qemuopt.Opts, node string) (imageSpec, error) {
	var s imageSpec
	driver := o.Str(node + "driver")
	prefix := node + "file."
	switch driver {
	case "":
		return s, fmt.Errorf("Parameter 'driver' is missing")
	case "nbd":
		return nbdSpec(o, node, driver)
	case "file", "host_device":
		// The protocol node alone: its bytes are the disk (raw).
		prefix, s.format = node, "raw"
	case "null-co", "null-aio":
		return nullSpec(o, node)
	case "blkdebug":
		// blkdebug above a whole image: its child is "image".
		cfg, err := blkdebug.FromOpts(o, node)
		if err != nil {
			return s, err
		}
		if s, err = nodeSpec(o, node+"image."); err != nil {
			return s, err
		}
		inner := s.open
		s.open = func(opts block.Options) (block.Image, error) {
			img, err := openSpecImage(inner, s.path, opts)
			if err != nil {
				return nil, err
			}
			return blkdebug.NewImage(img, cfg), nil
		}
		return s, nil
	default:
		// A format driver over a file: anything else (nbd, quorum, ...)
		// is a driver petrel img does not have, refused by name rather
		// than opened as something else.
		if _, ok := block.Lookup(driver); !ok {
			return s, fmt.Errorf("Unknown driver '%s' (petrel img opens qcow2, qed, raw over files)", driver)
		}
		s.format = driver
		if f, ok := o.Lookup(node + "file"); ok && !o.Has(prefix+"driver") {
			if f == "" {
				return s, fmt.Errorf("Parameter 'file' is missing")
			}
			return s, fmt.Errorf("Cannot find device='' nor node-name='%s' (petrel img opens files, not block nodes)", f)
		}
		switch d := o.Str(prefix + "driver"); d {
		case "nbd":
			return nbdSpec(o, prefix, driver)
		case "", "file", "host_device":
		case "blkdebug":
			// blkdebug between the format and its file: the engine's
			// events drive its rules.
			cfg, err := blkdebug.FromOpts(o, prefix)
			if err != nil {
				return s, err
			}
			s.opts.OpenFile = blkdebug.Opener(cfg)
			prefix += "image."
			switch d := o.Str(prefix + "driver"); d {
			case "file", "host_device":
			case "":
				return s, fmt.Errorf("Parameter 'image' is missing")
			default:
				return s, fmt.Errorf("Unknown protocol driver '%s' under blkdebug (petrel img opens files)", d)
			}
		default:
			return s, fmt.Errorf("Unknown protocol driver '%s' (petrel img opens files)", d)
		}
	}
	// The file name and the open options that map onto block.Options;
	// both the format level and the file level may say cache.*.
	s.path = o.Str(prefix + "filename")
	if s.path == "" {
		return s, fmt.Errorf("The '%s' block driver requires a file name", map[bool]string{true: "file", false: driver}[prefix == node])
	}
	var err error
	if s.opts.ReadOnly, err = o.Bool(node+"read-only", false); err != nil {
		return s, err
	}
	for _, k := range []string{node + "cache.direct", prefix + "cache.direct"} {
		if on, err := o.Bool(k, false); err != nil {
			return s, err
		} else if on {
			s.opts.DirectIO = true
		}
	}
	for _, k := range []string{node + "cache.no-flush", prefix + "cache.no-flush"} {
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
	// qcow2's l2-cache-entry-size tunes how QEMU caches L2 tables (in
	// parts), never what is read or written; Petrel caches whole tables
	// (iotest 061 amends through it).
	if driver == "qcow2" {
		if v, ok := o.Lookup(node + "l2-cache-entry-size"); ok {
			if _, err := qemuopt.ParseSize(v); err != nil {
				return s, fmt.Errorf("Parameter 'l2-cache-entry-size' expects a size")
			}
		}
	}
	return s, nil
}

// nullSpec reads a null-co node: size (default 1 GiB, as QEMU's) and
// read-zeroes; latency-ns is accepted and ignored.
func nullSpec(o *qemuopt.Opts, node string) (imageSpec, error) {
	s := imageSpec{path: "null-co://"}
	size := int64(1 << 30)
	if v, ok := o.Lookup(node + "size"); ok {
		n, err := qemuopt.ParseSize(v)
		if err != nil || n > null.MaxSize {
			return s, fmt.Errorf("Parameter 'size' expects a size")
		}
		size = int64(n)
	}
	readZeroes, err := o.Bool(node+"read-zeroes", false)
	if err != nil {
		return s, err
	}
	if _, err := o.Size(node + "latency-ns"); err != nil {
		return s, err
	}
	s.open = func(block.Options) (block.Image, error) { return null.New(size, readZeroes) }
	return s, nil
}

// blkdebugSpec reads "blkdebug:CONFIG:IMAGE": blkdebug with the rules of
// file CONFIG (none when empty) between the probed format and file IMAGE.
func blkdebugSpec(arg string) (imageSpec, error) {
	rest := arg[len("blkdebug:"):]
	config, path, ok := strings.Cut(rest, ":")
	if !ok || path == "" {
		return imageSpec{}, fmt.Errorf("Could not parse the blkdebug filename: expected blkdebug:CONFIG:IMAGE")
	}
	cfg, err := blkdebug.ConfigFromFile(config)
	if err != nil {
		return imageSpec{}, err
	}
	return imageSpec{path: path, opts: block.Options{OpenFile: blkdebug.Opener(cfg)}}, nil
}

// openSpecImage opens a spec's image: through its own opener (null-co,
// blkdebug above an image) or as a file of opts.Format at path.
func openSpecImage(open func(block.Options) (block.Image, error), path string, opts block.Options) (block.Image, error) {
	if open != nil {
		return open(opts)
	}
	return block.Open(path, opts)
}

// filePath is the file an image argument names, as qemu-img prints it
// ("image:" lines); arg itself when it cannot be read. A relative name
// that file: kept from reading as a protocol ("file:image:top.qcow2")
// is shown as "./image:top.qcow2", as QEMU's file driver names it
// (iotest 126).
func (t *tool) filePath(arg string) string {
	if nbd.IsFilename(arg) {
		if cfg, err := nbd.ParseFilename(arg); err == nil {
			return cfg.Filename()
		}
	}
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

// Backing files named json:{...} or blkdebug:... (iotest 020) are opened
// through the same parser as image arguments.
func init() {
	for _, prefix := range []string{"json:", "blkdebug:"} {
		block.RegisterNameOpener(prefix, openNamed)
	}
}

// openNamed opens a backing file given by such a name with the backing
// open's options (read-only, format) and the name's own.
func openNamed(name string, opts block.Options) (block.Image, error) {
	spec, err := parseImageSpec(name, false)
	if err != nil {
		return nil, err
	}
	if spec.format != "" {
		opts.Format = spec.format
	}
	opts.DirectIO = opts.DirectIO || spec.opts.DirectIO
	opts.NoSync = opts.NoSync || spec.opts.NoSync
	opts.NoBacking = opts.NoBacking || spec.opts.NoBacking
	opts.OpenFile = spec.opts.OpenFile
	return openSpecImage(spec.open, spec.path, opts)
}
