package nbd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// DefaultPort is NBD's IANA port, used when an address names none.
const DefaultPort = "10809"

// errNoAddress is QEMU's error for options or a filename naming no
// server.
var errNoAddress = errors.New("NBD server address missing")

// Config says where an export is and how to read its block status.
type Config struct {
	// Unix is the server's unix socket path; when empty the server is
	// Host:Port over TCP.
	Unix       string
	Host, Port string
	// Export is the export name; HasExport false means the default
	// export (""), which QEMU's filenames leave out.
	Export    string
	HasExport bool
	// DirtyBitmap is QEMU's x-dirty-bitmap: the metadata context block
	// status reads instead of base:allocation, its bits taken as
	// base:allocation's.
	DirtyBitmap string
}

// IsFilename reports whether name is one of QEMU's NBD filenames.
func IsFilename(name string) bool {
	for _, p := range []string{"nbd:", "nbd+tcp:", "nbd+unix:", "nbds:", "nbds+tcp:", "nbds+unix:"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// ParseFilename reads QEMU's NBD filenames (block/nbd.c's
// nbd_parse_filename and nbd_parse_uri): nbd[+tcp]://HOST[:PORT][/EXPORT],
// nbd+unix:///[EXPORT]?socket=PATH, nbd:unix:PATH[:exportname=EXPORT] and
// nbd:HOST:PORT[:exportname=EXPORT].
func ParseFilename(name string) (Config, error) {
	if strings.Contains(name, "://") {
		c, err := parseURI(name)
		if err != nil {
			return c, fmt.Errorf("No valid URL specified")
		}
		return c, nil
	}
	var c Config
	spec := name
	if i := strings.Index(spec, ":exportname="); i >= 0 {
		c.Export, c.HasExport = spec[i+len(":exportname="):], true
		if c.Export == "" {
			return c, errNoAddress // QEMU drops the whole name then
		}
		spec = spec[:i]
	}
	rest, ok := strings.CutPrefix(spec, "nbd:")
	if !ok {
		return c, fmt.Errorf("File name string for NBD must start with 'nbd:'")
	}
	if rest == "" {
		return c, errNoAddress
	}
	if path, ok := strings.CutPrefix(rest, "unix:"); ok {
		if path == "" {
			return c, errNoAddress
		}
		c.Unix = path
		return c, nil
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil || host == "" || port == "" {
		return c, fmt.Errorf("error parsing address '%s'", rest)
	}
	c.Host, c.Port = host, port
	return c, nil
}

// parseURI reads the nbd://, nbd+tcp:// and nbd+unix:// forms; nbds
// (TLS) is refused, as Petrel has no TLS credentials.
func parseURI(name string) (Config, error) {
	var c Config
	u, err := url.Parse(name)
	if err != nil {
		return c, err
	}
	unix := false
	switch u.Scheme {
	case "nbd", "nbd+tcp":
	case "nbd+unix":
		unix = true
	default:
		return c, fmt.Errorf("unsupported scheme %q", u.Scheme)
	}
	if e := strings.TrimPrefix(u.Path, "/"); e != "" {
		c.Export, c.HasExport = e, true
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return c, err
	}
	if unix {
		if u.Host != "" || len(q) != 1 || len(q["socket"]) != 1 || q.Get("socket") == "" {
			return c, fmt.Errorf("nbd+unix needs exactly socket= and no host")
		}
		c.Unix = q.Get("socket")
		return c, nil
	}
	if u.RawQuery != "" || u.Hostname() == "" {
		return c, fmt.Errorf("nbd over TCP needs a host and no query")
	}
	c.Host, c.Port = u.Hostname(), u.Port()
	if c.Port == "" {
		c.Port = DefaultPort
	}
	return c, nil
}

// FromOptions reads the nbd driver's options (json:{"driver": "nbd", ...}
// or --image-opts driver=nbd,...): QAPI's BlockdevOptionsNbd server.*,
// export and x-dirty-bitmap, and the legacy host, port and path keys
// that stand for server.*, as in QEMU. lookup returns one option's
// value; the caller refuses the keys FromOptions did not look up
// (tls-creds, reconnect-delay, open-timeout: nothing here honours them).
func FromOptions(lookup func(key string) (string, bool)) (Config, error) {
	var c Config
	get := func(k string) string { v, _ := lookup(k); return v }
	_, legacyHost := lookup("host")
	_, legacyPath := lookup("path")
	_, legacyPort := lookup("port")
	typ, hasServer := lookup("server.type")
	for _, k := range []string{"server.path", "server.host", "server.port"} {
		if _, ok := lookup(k); ok {
			hasServer = true
		}
	}
	switch {
	case hasServer && (legacyHost || legacyPath || legacyPort):
		return c, fmt.Errorf("Cannot use 'server' and path/host/port at the same time")
	case legacyHost && legacyPath:
		return c, fmt.Errorf("path and host may not be used at the same time")
	case legacyPath:
		if legacyPort {
			return c, fmt.Errorf("port may not be used without host")
		}
		c.Unix = get("path")
	case legacyHost:
		c.Host, c.Port = get("host"), get("port")
	case !hasServer:
		return c, errNoAddress
	case typ == "unix":
		c.Unix = get("server.path")
		if c.Unix == "" {
			return c, fmt.Errorf("Parameter 'path' is missing")
		}
	case typ == "inet":
		c.Host, c.Port = get("server.host"), get("server.port")
		if c.Host == "" {
			return c, fmt.Errorf("Parameter 'host' is missing")
		}
		if c.Port == "" {
			return c, fmt.Errorf("Parameter 'port' is missing")
		}
	case typ == "":
		return c, fmt.Errorf("Parameter 'type' is missing")
	default:
		return c, fmt.Errorf("Parameter 'server.type' does not accept value '%s' (petrel reaches NBD servers over unix or inet)", typ)
	}
	if c.Unix == "" && c.Port == "" {
		c.Port = DefaultPort
	}
	c.Export, c.HasExport = lookup("export")
	c.DirtyBitmap = get("x-dirty-bitmap")
	return c, nil
}

// Filename is the export's name as QEMU's nbd_refresh_filename gives it
// (what qemu-img info prints as "image:"); an IPv6 host has none there,
// so its plain address is returned.
func (c Config) Filename() string {
	switch {
	case c.Unix != "" && c.HasExport:
		return fmt.Sprintf("nbd+unix:///%s?socket=%s", c.Export, c.Unix)
	case c.Unix != "":
		return "nbd+unix://?socket=" + c.Unix
	case strings.Contains(c.Host, ":"):
		return net.JoinHostPort(c.Host, c.Port)
	case c.HasExport:
		return fmt.Sprintf("nbd://%s:%s/%s", c.Host, c.Port, c.Export)
	}
	return fmt.Sprintf("nbd://%s:%s", c.Host, c.Port)
}
