package imgtool

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

const secretObj = "secret,id=sec0,data=astrochicken"

// TestParseObjects: secrets by data and file, and the refusals.
func TestParseObjects(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pw")
	must(t, "create", "-f", "raw", file, "0") // an empty file: an empty secret
	s, err := parseObjects([]string{"secret,id=a,data=x,,y", "qom-type=secret,id=b,file=" + file})
	if err != nil || string(s["a"]) != "x,y" || s["b"] == nil || len(s["b"]) != 0 {
		t.Fatalf("secrets %q, %v", s, err)
	}
	for _, bad := range []string{"iothread,id=x", "secret,data=x", "secret,id=a", "secret,id=a,data=x,file=y"} {
		if _, err := parseObjects([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// uuidIters hides what differs between two LUKS headers made alike.
var uuidIters = regexp.MustCompile(`(uuid|iters|disk size|image): .*`)

// TestEncryptedCreateInfoConvert: qemu-img create's Formatting line and
// qemu-img info's encrypt block as qemu-img prints them; a convert to an
// encrypted target that qemu-img compare finds identical to its source;
// qemu-img's words for a wrong or missing secret.
func TestEncryptedCreateInfoConvert(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	dir := t.TempDir()
	mine, theirs := filepath.Join(dir, "p.qcow2"), filepath.Join(dir, "q.qcow2")
	opts := "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,encrypt.cipher-alg=aes-128,encrypt.ivgen-alg=essiv"
	out := must(t, "create", "-f", "qcow2", "--object", secretObj, "-o", opts, mine, "4M")
	q, err := testutil.QemuCombinedOutput("qemu-img", "create", "-f", "qcow2", "--object", secretObj, "-o", opts, theirs, "4M")
	if err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, q)
	}
	if strings.ReplaceAll(string(q), theirs, mine) != out {
		t.Errorf("Formatting line:\n%s\nqemu-img:\n%s", out, q)
	}
	info := must(t, "info", mine)
	q, err = exec.Command("qemu-img", "info", theirs).CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := uuidIters.ReplaceAllString(info, "$1"), uuidIters.ReplaceAllString(string(q), "$1"); got != want {
		t.Errorf("info:\n%s\nqemu-img info:\n%s", got, want)
	}

	src := filepath.Join(dir, "src.raw")
	randomFile(t, src, 3<<20, 7)
	target := filepath.Join(dir, "t.qcow2")
	must(t, "convert", "--object", secretObj, "-O", "qcow2", "-o", opts, src, target)
	spec := "driver=qcow2,encrypt.key-secret=sec0,file.filename=" + target
	if q, err := exec.Command("qemu-img", "compare", "--object", secretObj, "--image-opts", spec, "driver=raw,file.filename="+src).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img compare: %v\n%s", err, q)
	}
	must(t, "compare", "--object", secretObj, "--image-opts", spec, "driver=raw,file.filename="+src)
	if q, err := exec.Command("qemu-img", "check", "--object", secretObj, "--image-opts", spec).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check: %v\n%s", err, q)
	}

	for _, c := range []struct{ object, spec, want string }{
		{"secret,id=sec0,data=platypus", spec, "Invalid password, cannot unlock any keyslot"},
		{secretObj, "driver=qcow2,file.filename=" + target, "Parameter 'encrypt.key-secret' is required for cipher"},
		{"secret,id=sec1,data=x", spec, "No secret with id 'sec0'"},
	} {
		_, _, e := pimg("check", "--object", c.object, "--image-opts", c.spec)
		q, _ := exec.Command("qemu-img", "check", "--object", c.object, "--image-opts", c.spec).CombinedOutput()
		if !strings.Contains(e, c.want) || !strings.Contains(string(q), c.want) {
			t.Errorf("want %q\npetrel: %s\nqemu-img: %s", c.want, e, q)
		}
	}
}

// TestEncryptedCommit: iotest 198's commit of an encrypted overlay into
// an encrypted base, each with its own key (backing.encrypt.key-secret),
// and an overlay created over an encrypted base without the base's key;
// qemu-io reads the result.
func TestEncryptedCommit(t *testing.T) {
	testutil.NeedTool(t, "qemu-io")
	dir := t.TempDir()
	base, top := filepath.Join(dir, "b.qcow2"), filepath.Join(dir, "t.qcow2")
	s1 := "secret,id=sec1,data=furby"
	must(t, "create", "-q", "-f", "qcow2", "--object", secretObj, "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", base, "2M")
	must(t, "create", "-q", "-f", "qcow2", "--object", s1, "-o", "encrypt.format=luks,encrypt.key-secret=sec1,encrypt.iter-time=10", "-b", base, "-F", "qcow2", top)
	baseSpec := "driver=qcow2,encrypt.key-secret=sec0,file.filename=" + base
	spec := "driver=qcow2,file.filename=" + top + ",encrypt.key-secret=sec1,backing.driver=qcow2,backing.file.filename=" + base + ",backing.encrypt.key-secret=sec0"
	qio := func(spec string, cmds ...string) {
		args := []string{"--object", secretObj, "--object", s1, "--image-opts", spec}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		out, err := exec.Command("qemu-io", args...).CombinedOutput()
		if err != nil || strings.Contains(string(out), "Pattern verification failed") || strings.Contains(string(out), "qemu-io:") {
			t.Fatalf("qemu-io %v: %v\n%s", cmds, err, out)
		}
	}
	qio(baseSpec, "write -P 0xa 0 2M")
	qio(spec, "write -P 0x9 512k 700k")
	must(t, "commit", "--object", secretObj, "--object", s1, "--image-opts", spec)
	qio(baseSpec, "read -P 0xa 0 512k", "read -P 0x9 512k 700k", "read -P 0xa 1236k 812k")
	if q, err := exec.Command("qemu-img", "check", "--object", secretObj, "--image-opts", baseSpec).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check: %v\n%s", err, q)
	}
}

// TestEncryptedPreallocatedConvert: iotest 188's convert of an empty
// image to an encrypted, metadata-preallocated target: the zeroes are
// written (the preallocated clusters would decrypt to noise), so
// qemu-img compare finds the images identical.
func TestEncryptedPreallocatedConvert(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "s.qcow2"), filepath.Join(dir, "d.qcow2")
	must(t, "create", "-q", "-f", "qcow2", src, "1M")
	must(t, "convert", "-O", "qcow2", "--object", secretObj,
		"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,preallocation=metadata", src, dst)
	if q, err := exec.Command("qemu-img", "compare", "--object", secretObj, "--image-opts",
		"driver=qcow2,encrypt.key-secret=sec0,file.filename="+src, "driver=qcow2,encrypt.key-secret=sec0,file.filename="+dst).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img compare: %v\n%s", err, q)
	}
}

// TestKeyedImageName: info names an image opened with a key secret by
// the json: name qemu-img gives it.
func TestKeyedImageName(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	path := filepath.Join(t.TempDir(), "k.qcow2")
	must(t, "create", "-q", "-f", "qcow2", "--object", secretObj, "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", path, "1M")
	spec := "driver=qcow2,file.filename=" + path + ",encrypt.key-secret=sec0"
	got, _, _ := strings.Cut(must(t, "info", "--image-opts", spec), "\n")
	q, err := exec.Command("qemu-img", "info", "--image-opts", spec).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want, _, _ := strings.Cut(string(q), "\n"); got != want {
		t.Fatalf("petrel: %s\nqemu-img: %s", got, want)
	}
}

// TestEncryptedMapLikeQemu: map --output=json of an encrypted image gives
// no host offsets, as qemu-img's.
func TestEncryptedMapLikeQemu(t *testing.T) {
	testutil.NeedTool(t, "qemu-io")
	path := filepath.Join(t.TempDir(), "m.qcow2")
	must(t, "create", "-q", "-f", "qcow2", "--object", secretObj, "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", path, "1M")
	spec := "driver=qcow2,file.filename=" + path + ",encrypt.key-secret=sec0"
	if out, err := exec.Command("qemu-io", "--object", secretObj, "--image-opts", spec, "-c", "write 64k 64k", "-c", "write -z 256k 64k").CombinedOutput(); err != nil {
		t.Fatalf("qemu-io: %v\n%s", err, out)
	}
	got := must(t, "map", "--object", secretObj, "--output=json", "--image-opts", spec)
	q, err := exec.Command("qemu-img", "map", "--object", secretObj, "--output=json", "--image-opts", spec).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got != string(q) {
		t.Fatalf("petrel:\n%s\nqemu-img:\n%s", got, q)
	}
}
