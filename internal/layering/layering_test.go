package layering

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/petrel-vmm/petrel/"

// rule forbids packages under from (repository-relative path prefixes) to
// import packages under any of to, except the packages listed in except.
type rule struct {
	why    string
	from   []string
	to     []string
	except []string
	// notFrom exempts packages under from that the rule is not about.
	notFrom []string
	// tests extends the rule to the packages' test files.
	tests bool
}

var rules = []rule{
	{why: "firmware describes tables, devices describe themselves: firmware never depends on devices or what is built on them",
		from: []string{"firmware"}, to: []string{"devices", "machine", "cmd", "qmp", "internal/imgtool"}, tests: true},
	{why: "the AML builder is a leaf every device may use",
		from: []string{"firmware/aml"}, to: []string{""}},
	{why: "devices use firmware only through the AML builder, and never reach up to the machine or the command line",
		from: []string{"devices"}, to: []string{"firmware", "machine", "cmd", "qmp"}, except: []string{"firmware/aml"}},
	// vmm's and block's tests are not held to these yet: vmm's whole-VM
	// tests drive machine/pc, block/interop's tests compare petrel img
	// with qemu-img.
	{why: "vmm is the KVM layer under every machine and device",
		from: []string{"vmm"}, to: []string{"machine", "devices", "firmware", "block", "qmp", "cmd"}},
	{why: "the block layer stands alone (petrel img uses it without a VM)",
		from: []string{"block"}, to: []string{"vmm", "devices", "firmware", "machine", "qmp", "cmd", "internal/imgtool"}},
	{why: "QMP is an adapter over the PC (machine/pcqmp), not part of it",
		from: []string{"machine/pc", "machine/devmgr", "machine/blocknodes"}, to: []string{"qmp"}, tests: true},
	{why: "the option parser is a leaf the command line, QMP and the machine share",
		from: []string{"qemuopt"}, to: []string{""}, tests: true},
	{why: "the saved-machine format is a leaf devices, vmm and the machine share",
		from: []string{"vmstate"}, to: []string{""}, tests: true},
	{why: "qmp speaks the protocol against its Machine interface and knows no implementation of it",
		from: []string{"qmp"}, to: []string{"machine", "devices", "firmware", "vmm", "block", "cmd"}, tests: true},
	{why: "a machine knows nothing of QMP: machine/pcqmp adapts machine/pc to qmp.Machine",
		from: []string{"machine"}, to: []string{"qmp"}, notFrom: []string{"machine/pcqmp"}, tests: true},
	{why: "machines are driven by cmd, not the other way",
		from: []string{"machine"}, to: []string{"cmd"}, tests: true},
	{why: "test helpers stay out of the binary",
		from: []string{""}, to: []string{"internal/testutil", "tests"}, notFrom: []string{"internal/testutil", "tests"}},
}

// under reports whether pkg (repository-relative) is prefix or inside it;
// the empty prefix matches every package of the module.
func under(pkg, prefix string) bool {
	return prefix == "" || pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
}

// graph returns, for every package of the module, its imports of other
// module packages (repository-relative), without and with its tests'. It
// parses the files itself, whatever their build constraints, rather than
// asking go list: the test cache then knows which files the result depends
// on (it records files the test opens, not those a child process reads).
func graph(t *testing.T) (prod, withTests map[string][]string) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	prod, withTests = map[string][]string{}, map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && path != root {
				return filepath.SkipDir // another module
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		pkg := filepath.ToSlash(rel)
		isTest := strings.HasSuffix(path, "_test.go")
		for _, imp := range f.Imports {
			p, err := strconv.Unquote(imp.Path.Value)
			if err != nil || !strings.HasPrefix(p, module) {
				continue
			}
			p = strings.TrimPrefix(p, module)
			withTests[pkg] = append(withTests[pkg], p)
			if !isTest {
				prod[pkg] = append(prod[pkg], p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the module's imports: %v", err)
	}
	if len(withTests) < 10 {
		t.Fatalf("found only %d packages importing others under %s", len(withTests), root)
	}
	return prod, withTests
}

// violations returns "pkg -> imp" for every edge of g that r forbids.
func (r rule) violations(g map[string][]string) []string {
	var bad []string
	for pkg, imps := range g {
		if !anyUnder(pkg, r.from) || anyUnder(pkg, r.notFrom) {
			continue
		}
		for _, imp := range imps {
			if imp != pkg && anyUnder(imp, r.to) && !anyUnder(imp, r.except) && !under(imp, pkg) {
				bad = append(bad, pkg+" -> "+imp)
			}
		}
	}
	sort.Strings(bad)
	return bad
}

func anyUnder(pkg string, prefixes []string) bool {
	for _, p := range prefixes {
		if under(pkg, p) {
			return true
		}
	}
	return false
}

func TestImportsRunOneWay(t *testing.T) {
	prod, withTests := graph(t)
	for _, r := range rules {
		g := prod
		if r.tests {
			g = withTests
		}
		if bad := r.violations(g); len(bad) > 0 {
			t.Errorf("%s; forbidden imports:\n\t%s", r.why, strings.Join(bad, "\n\t"))
		}
	}
}

// The rules catch what they are meant to: a firmware package importing a
// device, a device importing firmware/acpi, an AML builder with an import.
func TestRulesCatchViolations(t *testing.T) {
	g := map[string][]string{
		"firmware/acpi": {"firmware/aml", "devices/pci"},
		"devices/pci":   {"firmware/aml", "firmware/acpi", "vmm"},
		"firmware/aml":  {"vmm/guestmem"},
		"machine/pc":    {"devices/pci", "firmware/acpi"},
	}
	var got []string
	for _, r := range rules {
		got = append(got, r.violations(g)...)
	}
	sort.Strings(got)
	want := []string{"devices/pci -> firmware/acpi", "firmware/acpi -> devices/pci", "firmware/aml -> vmm/guestmem"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("violations %q, want %q", got, want)
	}
}
