package imgtool

import (
	"encoding/base64"
	"fmt"
	"os"
	"strings"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/qemuopt"
)

// parseObjects reads --object options: secret objects only ("secret,
// id=ID,data=TEXT" or "...,file=PATH"), the keys of encrypted images, by
// id. Any other object type is refused by name.
func parseObjects(specs []string) (map[string][]byte, error) {
	secrets := map[string][]byte{}
	for _, s := range specs {
		o, err := qemuopt.Parse("--object", s, "qom-type")
		if err != nil {
			return nil, err
		}
		if typ := o.Str("qom-type"); typ != "secret" {
			return nil, fmt.Errorf("Invalid object type '%s': petrel img knows secret objects only", typ)
		}
		kv := map[string]string{}
		for _, k := range []string{"id", "data", "file", "format"} {
			if v, ok := o.Lookup(k); ok {
				kv[k] = v
			}
		}
		if err := o.Unused("Property 'secret.%s' not found"); err != nil {
			return nil, err
		}
		id := kv["id"]
		if id == "" {
			return nil, fmt.Errorf("Parameter 'id' is missing")
		}
		if _, dup := secrets[id]; dup {
			return nil, fmt.Errorf("attempt to add duplicate property '%s' to object (type 'container')", id)
		}
		data, hasData := kv["data"]
		file, hasFile := kv["file"]
		switch {
		case hasData && hasFile:
			return nil, fmt.Errorf("'data' and 'file' are mutually exclusive")
		case hasFile:
			b, err := os.ReadFile(file)
			if err != nil {
				return nil, fmt.Errorf("Unable to read %s: %v", file, errText(err))
			}
			secrets[id] = b
		case hasData:
			secrets[id] = []byte(data)
		default:
			return nil, fmt.Errorf("Either 'data' or 'file' must be provided")
		}
		switch f := kv["format"]; f {
		case "", "raw":
		case "base64":
			if secrets[id], err = decodeSecretBase64(string(secrets[id])); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("Parameter 'format' does not accept value '%s'", f)
		}
	}
	return secrets, nil
}

// decodeSecretBase64 decodes a secret given with format=base64, as
// QEMU's qbase64_decode: only the base64 alphabet and '=' are allowed;
// the padding may be left off.
func decodeSecretBase64(s string) ([]byte, error) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
	for _, c := range s {
		if !strings.ContainsRune(alphabet, c) {
			return nil, fmt.Errorf("Base64 data contains invalid characters")
		}
	}
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("Base64 data contains invalid characters")
	}
	return b, nil
}

// keySecretOptions copies the key-secret names and the backing file an
// --image-opts spec gives into opts.
func (t *tool) keySecretOptions(opts *block.Options, spec block.Options) {
	opts.Secrets = t.secrets
	if spec.KeySecret != "" {
		opts.KeySecret = spec.KeySecret
	}
	if spec.BackingKeySecret != "" {
		opts.BackingKeySecret = spec.BackingKeySecret
	}
	if spec.BackingOverride != "" {
		opts.BackingOverride = spec.BackingOverride
	}
	if spec.BackingFormat != "" {
		opts.BackingFormat = spec.BackingFormat
	}
}

// backingKeySecret is the key-secret id the image argument arg gives its
// backing file at depth depth (backing.encrypt.key-secret reaches the
// first backing file only), "" when it gives none.
func (t *tool) backingKeySecret(arg string, depth int) string {
	if depth != 1 || !(t.imageOpts || strings.HasPrefix(arg, "json:")) {
		return ""
	}
	spec, err := parseImageSpec(arg, t.imageOpts)
	if err != nil {
		return ""
	}
	return spec.opts.BackingKeySecret
}

// openFileLayer opens a layer of a chain by its file name (not as
// --image-opts, whatever the image argument was).
func (t *tool) openFileLayer(path, format string, opts block.Options) (block.Image, error) {
	imageOpts := t.imageOpts
	t.imageOpts = false
	defer func() { t.imageOpts = imageOpts }()
	return t.openImage(path, format, opts)
}
