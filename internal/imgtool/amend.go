package imgtool

import (
	"fmt"
	"strings"

	"github.com/petrel-vmm/petrel/block"
)

func init() {
	register("amend", "change image options: amend [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] -o options file", runAmend)
}

// amender is implemented by engines that can change creation options of
// an existing image (qcow2): opts are the -o keys of the format's amend
// option list, the last value of each; progress gets the work done and
// the whole work. The error is printed as it is (it may carry qemu-img's
// hint on a second line).
type amender interface {
	Amend(opts map[string]string, progress func(done, total int64)) error
}

// runAmend is qemu-img amend (img_amend): -o is required; help for the
// options is printed before the image is opened when -f names the format,
// else after opening it; the options are checked against the format's
// amend list (one only valid at creation gets qemu-img's hint), then the
// engine applies them, with the progress running 0 .. 100 under -p.
func runAmend(t *tool, args []string) int {
	p, err := optSpec{short: "ho:f:t:pq", long: []string{"object=", "image-opts", "force", "help"}}.parse(args)
	if err != nil {
		return t.fail("%v", err)
	}
	if err := t.commonOptions(p); err != nil {
		return t.fail("%v", err)
	}
	options, given, err := optionList(p.opts["o"])
	if err != nil {
		return t.fail("%v", err)
	}
	if !given {
		t.errorf("Must specify options (-o)")
		fmt.Fprintf(t.stderr, "Try '%s --help' for more information\n", t.prog)
		return 1
	}
	format := p.get("f")
	if format != "" && hasHelpOption(options) {
		return t.amendHelp(format)
	}
	if len(p.args) != 1 {
		return t.fail("Expecting one image file name")
	}
	var opts block.Options
	if err := cacheMode(p.get("t"), &opts); err != nil {
		return t.fail("%v", err)
	}
	img, err := t.openImage(p.args[0], format, opts)
	if err != nil {
		return t.fail("%v", err)
	}
	defer img.Close()
	if hasHelpOption(options) {
		return t.amendHelp(img.Format())
	}
	am, ok := img.(amender)
	if !ok {
		return t.fail("Format driver '%s' does not support option amendment", img.Format())
	}
	values, err := amendValues(img.Format(), options)
	if err != nil {
		return t.fail("%v", err)
	}
	progress := newProgress(t, p.has("p") && !p.has("q"))
	err = am.Amend(values, func(done, total int64) { progress.show(100 * float64(done) / float64(total)) })
	progress.end()
	// Several messages (errors.Join) are printed as qemu-img prints
	// each error_report: one prefixed line each.
	if multi, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range multi.Unwrap() {
			t.errorf("%v", e)
		}
		return 1
	}
	if err != nil {
		return t.fail("%v", err)
	}
	if err := img.Close(); err != nil {
		return t.fail("%v", err)
	}
	return 0
}

// amendValues parses an option list against the format's amend options,
// as qemu-img amend: an unknown key is "Invalid parameter", with a hint
// when the key is a creation option; boolean and size values are checked
// as QemuOpts checks them. A key given twice keeps its last value.
func amendValues(format, list string) (map[string]string, error) {
	pairs, err := parseKV(list)
	if err != nil {
		return nil, err
	}
	values := map[string]string{}
	for _, kv := range pairs {
		k, v := kv[0], kv[1]
		d, ok := findOpt(amendOptionHelp[format], k)
		if !ok {
			if _, create := findOpt(createOptionHelp[format], k); create {
				return nil, fmt.Errorf("Invalid parameter '%s'\nThis option is only supported for image creation", k)
			}
			return nil, fmt.Errorf("Invalid parameter '%s'", k)
		}
		switch d.typ {
		case "bool (on/off)":
			if _, err := parseBool(k, v); err != nil {
				return nil, err
			}
		case "size":
			if _, err := parseSize(v); err != nil {
				return nil, fmt.Errorf("Parameter '%s' expects a non-negative number below 2^64\n"+
					"Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"+
					"and exabytes, respectively.", k)
			}
		case "num":
			if strings.TrimLeft(v, "0123456789") != "" || v == "" {
				return nil, fmt.Errorf("Parameter '%s' expects a number", k)
			}
		}
		values[k] = v
	}
	return values, nil
}

// findOpt looks an option up by name.
func findOpt(list []optDesc, name string) (optDesc, bool) {
	for _, d := range list {
		if d.name == name {
			return d, true
		}
	}
	return optDesc{}, false
}

// progress prints qemu-img's -p progress ("    (P/100%)\r"): 0 first, a
// new value when it moved more than 1 point from the last one printed,
// and 100 at the end followed by a newline (qemu_progress_init(p, 1.0)).
type progress struct {
	t    *tool
	on   bool
	last float64
}

func newProgress(t *tool, on bool) *progress {
	p := &progress{t: t, on: on}
	p.print(0)
	return p
}

func (p *progress) print(v float64) {
	if p.on {
		fmt.Fprintf(p.t.stdout, "    (%3.2f/100%%)\r", v)
		p.last = v
	}
}

func (p *progress) show(v float64) {
	if v > p.last+1 || v < p.last-1 || v == 100 {
		p.print(v)
	}
}

func (p *progress) end() {
	p.print(100)
	if p.on {
		fmt.Fprintln(p.t.stdout)
	}
}
