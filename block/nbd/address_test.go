package nbd

import (
	"strings"
	"testing"
)

// QEMU's NBD filenames and the name qemu-img shows for each
// (nbd_refresh_filename's), or the error.
func TestParseFilename(t *testing.T) {
	for _, c := range []struct{ in, filename, err string }{
		{in: "nbd+unix:///exp?socket=/run/s", filename: "nbd+unix:///exp?socket=/run/s"},
		{in: "nbd+unix://?socket=rel", filename: "nbd+unix://?socket=rel"},
		{in: "nbd+unix:///?socket=/s", filename: "nbd+unix://?socket=/s"},
		{in: "nbd://example.org/disk", filename: "nbd://example.org:10809/disk"},
		{in: "nbd+tcp://h:1234", filename: "nbd://h:1234"},
		{in: "nbd:unix:/tmp/s:exportname=e", filename: "nbd+unix:///e?socket=/tmp/s"},
		{in: "nbd:unix:/tmp/s", filename: "nbd+unix://?socket=/tmp/s"},
		{in: "nbd:localhost:99", filename: "nbd://localhost:99"},
		{in: "nbd:localhost:99:exportname=x/y", filename: "nbd://localhost:99/x/y"},
		{in: "nbd:[::1]:99", filename: "[::1]:99"},
		{in: "nbd+unix:///e?socket=/s&x=1", err: "No valid URL specified"},
		{in: "nbd+unix://host/e?socket=/s", err: "No valid URL specified"},
		{in: "nbd://h/e?socket=/s", err: "No valid URL specified"},
		{in: "nbds://h/e", err: "No valid URL specified"},
		{in: "nbd:localhost", err: "error parsing address 'localhost'"},
		{in: "nbd:unix:/s:exportname=", err: "NBD server address missing"},
		{in: "nbd:", err: "NBD server address missing"},
	} {
		cfg, err := ParseFilename(c.in)
		switch {
		case c.err != "" && (err == nil || err.Error() != c.err):
			t.Errorf("%s: error %v, want %q", c.in, err, c.err)
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.in, err)
		case c.err == "" && cfg.Filename() != c.filename:
			t.Errorf("%s: filename %s, want %s", c.in, cfg.Filename(), c.filename)
		}
	}
}

// The nbd driver's options: server.*, the legacy keys, their conflicts.
func TestFromOptions(t *testing.T) {
	for _, c := range []struct{ opts, filename, err string }{
		{opts: "server.type=unix,server.path=/s,export=e", filename: "nbd+unix:///e?socket=/s"},
		{opts: "server.type=inet,server.host=h,server.port=7", filename: "nbd://h:7"},
		{opts: "host=-1", filename: "nbd://-1:10809"},
		{opts: "host=h,port=5", filename: "nbd://h:5"},
		{opts: "path=42", filename: "nbd+unix://?socket=42"},
		{opts: "path=42,server.type=unix", err: "Cannot use 'server' and path/host/port at the same time"},
		{opts: "path=42,host=h", err: "path and host may not be used at the same time"},
		{opts: "export=e", err: "NBD server address missing"},
		{opts: "server.path=/s", err: "Parameter 'type' is missing"},
		{opts: "server.type=unix", err: "Parameter 'path' is missing"},
		{opts: "server.type=inet,server.host=h", err: "Parameter 'port' is missing"},
		{opts: "server.type=fd,server.str=3", err: "Parameter 'server.type' does not accept value 'fd' (petrel reaches NBD servers over unix or inet)"},
	} {
		m := map[string]string{}
		for _, kv := range strings.Split(c.opts, ",") {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
		cfg, err := FromOptions(func(k string) (string, bool) { v, ok := m[k]; return v, ok })
		switch {
		case c.err != "" && (err == nil || err.Error() != c.err):
			t.Errorf("%s: error %v, want %q", c.opts, err, c.err)
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.opts, err)
		case c.err == "" && cfg.Filename() != c.filename:
			t.Errorf("%s: filename %s, want %s", c.opts, cfg.Filename(), c.filename)
		}
	}
}

// FuzzParseFilename: any name parses or fails cleanly, and a parsed
// one's refreshed filename parses to the same server and export.
func FuzzParseFilename(f *testing.F) {
	for _, s := range []string{"nbd+unix:///exp?socket=/s", "nbd://h:1/e", "nbd:unix:/s:exportname=e", "nbd:h:1", "nbd://[::1]:5/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		cfg, err := ParseFilename(name)
		if err != nil {
			return
		}
		if cfg.Unix == "" && (cfg.Host == "" || cfg.Port == "") {
			t.Fatalf("%q parsed without a server: %+v", name, cfg)
		}
		// The refreshed name is QEMU's printf, not an escaped URI: it
		// parses back only for names of plain characters (not an IPv6
		// host, a service name as port, spaces, '?' in an export...).
		const plain = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/"
		if strings.Trim(cfg.Export+cfg.Unix, plain) != "" || strings.Trim(cfg.Host, plain[:len(plain)-1]) != "" ||
			strings.Trim(cfg.Port, "0123456789") != "" ||
			strings.Contains(cfg.Export, "//") || strings.HasPrefix(cfg.Export, "/") {
			return
		}
		again, err := ParseFilename(cfg.Filename())
		if err != nil {
			t.Fatalf("%q -> %q: %v", name, cfg.Filename(), err)
		}
		if again != cfg && (again.Unix != cfg.Unix || again.Host != cfg.Host || again.Export != cfg.Export) {
			t.Fatalf("%q -> %+v -> %q -> %+v", name, cfg, cfg.Filename(), again)
		}
	})
}
