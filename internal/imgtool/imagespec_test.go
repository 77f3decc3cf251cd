package imgtool

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

func TestImageSpecForms(t *testing.T) {
	for _, c := range []struct {
		arg       string
		imageOpts bool
		path, fmt string
		noBacking bool
	}{
		{"a.qcow2", false, "a.qcow2", "", false},
		{"file:a.qcow2", false, "a.qcow2", "", false},
		{`json:{"driver":"qcow2","file":{"driver":"file","filename":"a.qcow2"}}`, false, "a.qcow2", "qcow2", false},
		{`json:{"driver":"file","filename":"a.raw"}`, false, "a.raw", "raw", false},
		{`json:{"driver":"qed","backing":null,"file":{"driver":"file","filename":"b"}}`, false, "b", "qed", true},
		{"driver=qcow2,file.filename=a.qcow2", true, "a.qcow2", "qcow2", false},
		{"driver=qcow2,file.driver=file,file.filename=a,,b", true, "a,b", "qcow2", false},
	} {
		s, err := parseImageSpec(c.arg, c.imageOpts)
		if err != nil || s.path != c.path || s.format != c.fmt || s.opts.NoBacking != c.noBacking {
			t.Errorf("parseImageSpec(%q) = %+v, %v", c.arg, s, err)
		}
	}
	for _, bad := range []string{
		`json:{"driver":"qcow2","file":{"driver":"file","filename":"a"},"foo":1}`,
		`json:{"driver":"blkdebug"}`,
		`json:{"driver":"qcow2","file":"node0"}`,
		`json:{"driver":"qcow2","file":{"driver":"nbd","filename":"a"}}`,
		`json:{"driver":"qcow2"`,
		`json:{"driver":"qcow2","file":{"driver":"file"}}`,
		`json:{"driver":"qcow2","file":{"driver":"file","filename":"a","aio":"native"}}`,
	} {
		if s, err := parseImageSpec(bad, false); err == nil {
			t.Errorf("parseImageSpec(%q) = %+v, want an error", bad, s)
		}
	}
	if s, err := parseImageSpec("driver=qcow2,file.filename=a,foo=bar", true); err == nil ||
		err.Error() != "Block format 'qcow2' does not support the option 'foo'" {
		t.Errorf("unknown --image-opts key: %+v, %v", s, err)
	}
}

// TestImageSpecLikeQemuImg: qemu-img and petrel img print the same info
// for an image named by json:, file: and --image-opts.
func TestImageSpecLikeQemuImg(t *testing.T) {
	qemuImg := testutil.NeedTool(t, "qemu-img")
	dir := t.TempDir()
	img := filepath.Join(dir, "a.qcow2")
	if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", img, "1M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"info", `json:{"driver":"qcow2","file":{"driver":"file","filename":"` + img + `"}}`},
		{"info", "file:" + img},
		{"info", "--image-opts", "driver=qcow2,file.filename=" + img},
		{"check", "--image-opts", "driver=qcow2,file.driver=file,file.filename=" + img},
		{"info", "--image-opts", "driver=qcow2,file.filename=" + img + ",foo=bar"},
		{"info", filepath.Join(dir, "missing")},
	} {
		want, _ := exec.Command(qemuImg, args...).CombinedOutput()
		var o, e strings.Builder
		MainAs("qemu-img", args, &o, &e)
		got := o.String() + e.String()
		// disk size depends on the moment; compare the other lines
		strip := func(s string) string {
			var keep []string
			for _, l := range strings.Split(s, "\n") {
				if !strings.HasPrefix(l, "disk size:") {
					keep = append(keep, l)
				}
			}
			return strings.Join(keep, "\n")
		}
		if strip(got) != strip(string(want)) {
			t.Errorf("%v:\nqemu-img:\n%s\npetrel:\n%s", args, want, got)
		}
	}
}

// FuzzImageSpec: json: and --image-opts arguments give a spec or an error,
// never a panic.
func FuzzImageSpec(f *testing.F) {
	f.Add(`json:{"driver":"qcow2","file":{"driver":"file","filename":"a"}}`, false)
	f.Add(`json:{"driver":"qed","backing":null,"file":{"filename":"a"}}`, false)
	f.Add("driver=qcow2,file.filename=a,,b,read-only=on", true)
	f.Add(`json:{"driver": "blkdebug", "image": {"driver": "qcow2", "file": {"driver": "file", "filename": "x"}}, "inject-error": [{"event": "none", "iotype": "read", "sector": 5}]}`, false)
	f.Add(`json:{'driver': 'qcow2', 'file': {'driver': 'blkdebug', 'set-state': [{'event': 'read_aio', 'new_state': 42}], 'image': {'driver': 'file', 'filename': 'x'}}}`, false)
	f.Add(`json:{"driver": "null-co", "size": 1048576, "read-zeroes": true}`, false)
	f.Add("driver=blkdebug,image.driver=qcow2,image.file.driver=file,image.file.filename=x,align=4k", true)
	f.Add("blkdebug::x", false)
	f.Fuzz(func(t *testing.T, arg string, imageOpts bool) {
		s, err := parseImageSpec(arg, imageOpts)
		if err == nil && s.path == "" && arg != "" {
			t.Fatalf("parseImageSpec(%q) gave no path", arg)
		}
	})
}

// TestCreateOptionErrorsLikeQemuImg: -o values qemu-img refuses get its
// words (QemuOpts' size message, qcow2's cluster size range).
func TestCreateOptionErrorsLikeQemuImg(t *testing.T) {
	qemuImg := testutil.NeedTool(t, "qemu-img")
	dir := t.TempDir()
	for _, args := range [][]string{
		{"create", "-f", "qcow2", "-o", "cluster_size=4194304", filepath.Join(dir, "a.qcow2"), "1M"},
		{"create", "-f", "qcow2", "-o", "size=-1k", filepath.Join(dir, "b.qcow2")},
		{"create", "-f", "raw", filepath.Join(dir, "c.raw"), "1024.0b"},
		{"create", "-f", "raw", filepath.Join(dir, "d.raw"), "8E"},
		{"create", "-f", "raw", filepath.Join(dir, "e.raw"), "1.5b"},
	} {
		want, _ := exec.Command(qemuImg, args...).CombinedOutput()
		var o, e strings.Builder
		MainAs("qemu-img", args, &o, &e)
		if got := o.String() + e.String(); got != string(want) {
			t.Errorf("%v:\nqemu-img:\n%s\npetrel:\n%s", args, want, got)
		}
	}
}

// TestCompareQuietLikeQemuImg: compare -q prints nothing and exits as
// qemu-img does (iotest 048).
func TestCompareQuietLikeQemuImg(t *testing.T) {
	qemuImg := testutil.NeedTool(t, "qemu-img")
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.raw"), filepath.Join(dir, "b.raw")
	exec.Command(qemuImg, "create", "-q", "-f", "raw", a, "1M").Run()
	exec.Command(qemuImg, "create", "-q", "-f", "raw", b, "2M").Run()
	for _, args := range [][]string{{"compare", "-q", a, a}, {"compare", "-q", a, b}, {"compare", a, b}} {
		want, err := exec.Command(qemuImg, args...).CombinedOutput()
		wantRC := 0
		if ee, ok := err.(*exec.ExitError); ok {
			wantRC = ee.ExitCode()
		}
		var o, e strings.Builder
		rc := MainAs("qemu-img", args, &o, &e)
		if got := o.String() + e.String(); got != string(want) || rc != wantRC {
			t.Errorf("%v: qemu-img %d %q, petrel %d %q", args, wantRC, want, rc, got)
		}
	}
}

// QEMU's JSON takes single-quoted strings (iotest 110 writes json:
// filenames so); they read as the double-quoted ones would.
func TestJSONSingleQuotes(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{'driver':'qcow2','file':{'driver':'file','filename':'/a/b'}}`, `{"driver":"qcow2","file":{"driver":"file","filename":"/a/b"}}`},
		{`{'x':'it\'s "q"'}`, `{"x":"it's \"q\""}`},
		{`{"a":"don't"}`, `{"a":"don't"}`},
		{`{'a':"b",'c':'d\\'}`, `{"a":"b","c":"d\\"}`},
	}
	for _, c := range cases {
		got, ok := doubleQuoted(c.in)
		if !ok || got != c.want {
			t.Errorf("doubleQuoted(%s) = %s, %v; want %s", c.in, got, ok, c.want)
		}
	}
	for _, bad := range []string{`{'a`, `{'a\'}`, `{"a':1}`} {
		if _, ok := doubleQuoted(bad); ok {
			t.Errorf("doubleQuoted(%s) accepted an open string", bad)
		}
	}
	s, err := parseImageSpec(`json:{'driver':'qed','file':{'driver':'file','filename':'/tmp/x.qed'}}`, false)
	if err != nil || s.path != "/tmp/x.qed" || s.format != "qed" {
		t.Fatalf("single-quoted json: %+v, %v", s, err)
	}
}

// TestInfoBackingChainImageOpts: with --image-opts only the argument is an
// option string; info --backing-chain opens the backing files it names as
// plain files (iotest 279).
func TestInfoBackingChainImageOpts(t *testing.T) {
	dir := t.TempDir()
	for _, fmtName := range []string{"qcow2", "qed"} {
		base := filepath.Join(dir, "base."+fmtName)
		mid := filepath.Join(dir, "mid."+fmtName)
		top := filepath.Join(dir, "top."+fmtName)
		must(t, "create", "-q", "-f", fmtName, base, "64M")
		must(t, "create", "-q", "-f", fmtName, "-b", base, "-F", fmtName, mid)
		must(t, "create", "-q", "-f", fmtName, "-b", mid, "-F", fmtName, top)
		out := must(t, "info", "--backing-chain", "--image-opts",
			"driver="+fmtName+",file.driver=file,file.filename="+top)
		for _, want := range []string{"image: " + top + "\n", "image: " + mid + "\n", "image: " + base + "\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: info --backing-chain lacks %q:\n%s", fmtName, want, out)
			}
		}
	}
}

// TestColonFileNames: "file:" makes a name with a colon a plain file for
// create and info; info shows such a relative name as "./NAME" and a
// backing file's actual path as QEMU's path_combine writes it, uncleaned
// (iotest 126).
func TestColonFileNames(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	must(t, "create", "-q", "-f", "qcow2", "file:"+dir+"/a:b.qcow2", "1M")
	if _, err := os.Stat(dir + "/a:b.qcow2"); err != nil {
		t.Fatalf("create file:...: %v", err)
	}
	must(t, "create", "-q", "-f", "qcow2", "base.qcow2", "1M")
	must(t, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "file:image:top.qcow2")
	out := must(t, "info", "file:image:top.qcow2")
	for _, want := range []string{"image: ./image:top.qcow2\n", "backing file: base.qcow2 (actual path: ./base.qcow2)\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("info lacks %q:\n%s", want, out)
		}
	}
	must(t, "create", "-q", "-f", "qcow2", "-b", "./a:b.qcow2", "-F", "qcow2", dir+"/top2.qcow2")
	out = must(t, "info", dir+"/top2.qcow2")
	if want := "backing file: ./a:b.qcow2 (actual path: " + dir + "/./a:b.qcow2)\n"; !strings.Contains(out, want) {
		t.Errorf("info lacks %q:\n%s", want, out)
	}
}
