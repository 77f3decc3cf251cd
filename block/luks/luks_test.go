package luks

import (
	"bytes"
	"crypto/aes"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/xts"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// FuzzParse: any 592 bytes either parse into a header whose cipher spec
// builds and which encodes back to a header that parses the same, or
// give an error; never a panic.
func FuzzParse(f *testing.F) {
	h, _, _, err := NewHeader(CreateOptions{IterTime: 1}, []byte("x"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(h.Encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := Parse(data)
		if err != nil {
			return
		}
		spec, err := h.Spec()
		if err != nil {
			t.Fatalf("parsed header with a bad spec: %v", err)
		}
		if _, err := NewCipher(spec, make([]byte, h.KeyBytes)); err != nil {
			t.Fatalf("parsed header whose cipher does not build: %v", err)
		}
		h2, err := Parse(h.Encode())
		if err != nil || h2.CipherMode != h.CipherMode || h2.Slots != h.Slots || h2.PayloadOffset != h.PayloadOffset {
			t.Fatalf("re-encoded header differs: %v", err)
		}
		h.Describe()
	})
}

// TestXTSMatchesXCrypto: the XTS-plain64 sector cipher is x/crypto's XTS
// with the sector number as tweak.
func TestXTSMatchesXCrypto(t *testing.T) {
	key := bytes.Repeat([]byte{7, 1, 9}, 22)[:64]
	c, err := NewCipher(Spec{Alg: "aes-256", Mode: "xts", IVGen: "plain64"}, key)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := xts.NewCipher(aes.NewCipher, key)
	if err != nil {
		t.Fatal(err)
	}
	plain := bytes.Repeat([]byte("petrel!"), 3*SectorSize/7+1)[:3*SectorSize]
	got := append([]byte(nil), plain...)
	c.Encrypt(41, got)
	for i := range 3 {
		want := make([]byte, SectorSize)
		ref.Encrypt(want, plain[i*SectorSize:(i+1)*SectorSize], uint64(41+i))
		if !bytes.Equal(got[i*SectorSize:(i+1)*SectorSize], want) {
			t.Fatalf("sector %d differs from x/crypto/xts", 41+i)
		}
	}
	c.Decrypt(41, got)
	if !bytes.Equal(got, plain) {
		t.Fatal("decrypt does not invert encrypt")
	}
}

// TestUnlock: slot 0 opens with its password, not with another.
func TestUnlock(t *testing.T) {
	h, area, c, err := NewHeader(CreateOptions{IterTime: 1, Spec: Spec{Mode: "cbc", IVGen: "essiv"}}, []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	read := func(p []byte, off int64) error { copy(p, area[off:]); return nil }
	if _, err := h.Unlock(read, []byte("hunter3")); !errors.Is(err, ErrBadPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	c2, err := h.Unlock(read, []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, SectorSize)
	c.Encrypt(5, buf)
	c2.Decrypt(5, buf)
	if !bytes.Equal(buf, make([]byte, SectorSize)) {
		t.Fatal("unlocked cipher differs from the created one")
	}
}

// TestLuksFormatInterop: a luks image Petrel creates and writes decrypts
// in qemu-io, and one qemu-img creates and qemu-io writes decrypts in
// Petrel.
func TestLuksFormatInterop(t *testing.T) {
	testutil.NeedTool(t, "qemu-io")
	secrets := map[string][]byte{"sec0": []byte("hunter0")}
	qio := func(path string, cmds ...string) string {
		args := []string{"--object", "secret,id=sec0,data=hunter0", "--image-opts", "driver=luks,key-secret=sec0,file.filename=" + path}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		out, err := exec.Command("qemu-io", args...).CombinedOutput()
		if err != nil || bytes.Contains(out, []byte("Pattern verification failed")) {
			t.Fatalf("qemu-io %v: %v\n%s", cmds, err, out)
		}
		return string(out)
	}
	dir := t.TempDir()
	mine := filepath.Join(dir, "p.luks")
	if err := Create(mine, block.CreateOptions{Size: 1 << 20, Secrets: secrets, Extra: map[string]string{"key-secret": "sec0", "iter-time": "10"}}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(mine, block.Options{Secrets: secrets, KeySecret: "sec0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{0x42}, 3000), 700); err != nil {
		t.Fatal(err)
	}
	img.Close()
	qio(mine, "read -P 0x42 700 3000")

	theirs := filepath.Join(dir, "q.luks")
	if out, err := testutil.QemuCombinedOutput("qemu-img", "create", "-q", "-f", "luks", "--object", "secret,id=sec0,data=hunter0",
		"-o", "key-secret=sec0,iter-time=10,cipher-mode=cbc,ivgen-alg=essiv", theirs, "1M"); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	qio(theirs, "write -P 0x33 1000 5000")
	img, err = Open(theirs, block.Options{ReadOnly: true, Secrets: secrets, KeySecret: "sec0"})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	got := make([]byte, 5000)
	if _, err := img.ReadAt(got, 1000); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bytes.Repeat([]byte{0x33}, 5000)) {
		t.Fatal("petrel reads other bytes than qemu-io wrote")
	}
}
