package qcow2

import (
	"errors"
	"fmt"
	"math/rand"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/block/luks"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

const testSecret = "astrochicken"

var testSecrets = map[string][]byte{"sec0": []byte(testSecret)}

// qemuSecretArgs open path in qemu-img/qemu-io with its key, as iotests do.
func qemuSecretArgs(path string) []string {
	return []string{"--object", "secret,id=sec0,data=" + testSecret, "--image-opts",
		"driver=qcow2,encrypt.key-secret=sec0,file.filename=" + path}
}

// qemuCheckEncrypted runs qemu-img check with the key; it must be clean.
func qemuCheckEncrypted(t *testing.T, path string) {
	t.Helper()
	testutil.NeedTool(t, "qemu-img")
	args := append([]string{"check"}, qemuSecretArgs(path)...)
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No errors were found") {
		t.Fatalf("qemu-img check: %v\n%s", err, out)
	}
}

// qemuReadEncrypted is the guest disk as qemu-img convert decrypts it.
func qemuReadEncrypted(t *testing.T, path string) []byte {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "out.raw")
	args := append(append([]string{"convert"}, qemuSecretArgs(path)...), "-O", "raw", raw)
	run(t, "qemu-img", args...)
	return readFile(t, raw)
}

func encryptedCases() []block.CreateOptions {
	luksOpts := func(cs int64, extra ...string) block.CreateOptions {
		x := map[string]string{"encrypt.format": "luks", "encrypt.key-secret": "sec0", "encrypt.iter-time": "10"}
		for i := 0; i+1 < len(extra); i += 2 {
			x[extra[i]] = extra[i+1]
		}
		return block.CreateOptions{Size: 4 << 20, ClusterSize: cs, Extra: x, Secrets: testSecrets}
	}
	ext := luksOpts(65536)
	ext.ExtendedL2 = true
	return []block.CreateOptions{
		luksOpts(0),
		luksOpts(512, "encrypt.cipher-alg", "aes-128", "encrypt.cipher-mode", "cbc", "encrypt.ivgen-alg", "essiv"),
		luksOpts(4096, "encrypt.cipher-alg", "aes-192", "encrypt.ivgen-alg", "plain", "encrypt.hash-alg", "sha1"),
		ext,
		{Size: 4 << 20, Extra: map[string]string{"encryption": "on", "encrypt.key-secret": "sec0"}, Secrets: testSecrets},
	}
}

// TestEncryptedInterop: encrypted images Petrel creates and writes (LUKS
// with several ciphers and cluster sizes, legacy AES) pass qemu-img check
// and decrypt in qemu-img to the bytes written; what qemu-io writes into
// them Petrel reads back.
func TestEncryptedInterop(t *testing.T) {
	for i, o := range encryptedCases() {
		t.Run(fmt.Sprintf("case%d_%s_cs%d", i, o.Extra["encrypt.format"], o.ClusterSize), func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "enc.qcow2")
			if err := Create(path, o); err != nil {
				t.Fatal(err)
			}
			qemuCheckEncrypted(t, path)
			img, err := Open(path, block.Options{Secrets: testSecrets, KeySecret: "sec0"})
			if err != nil {
				t.Fatal(err)
			}
			model := make([]byte, img.Size())
			rng := rand.New(rand.NewSource(int64(i)))
			randomOps(t, img, model, rng, 200, 3*max(img.ClusterSize(), 4096))
			assertEqual(t, "engine read-back", readAll(t, img), model)
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			qemuCheckEncrypted(t, path)
			assertEqual(t, "qemu-img convert", qemuReadEncrypted(t, path), model)

			// qemu-io writes, Petrel reads.
			args := append(append([]string{}, qemuSecretArgs(path)...), "-c", "write -P 0x5a 1000 70000")
			run(t, "qemu-io", args...)
			for j := 1000; j < 71000; j++ {
				model[j] = 0x5a
			}
			img, err = Open(path, block.Options{ReadOnly: true, Secrets: testSecrets, KeySecret: "sec0"})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			assertEqual(t, "after qemu-io", readAll(t, img), model)
		})
	}
}

// TestEncryptedOpenErrors: a wrong password, a missing key and a missing
// secret are refused in QEMU's words; info's metadata-only open needs no
// key and describes the LUKS header.
func TestEncryptedOpenErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "enc.qcow2")
	if err := Create(path, encryptedCases()[0]); err != nil {
		t.Fatal(err)
	}
	w, err := Open(path, block.Options{Secrets: testSecrets, KeySecret: "sec0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(path, block.Options{Secrets: map[string][]byte{"sec0": []byte("platypus")}, KeySecret: "sec0"})
	if !errors.Is(err, luks.ErrBadPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := Open(path, block.Options{}); err == nil || !strings.Contains(err.Error(), "Parameter 'encrypt.key-secret' is required for cipher") {
		t.Fatalf("no key: %v", err)
	}
	if _, err := Open(path, block.Options{KeySecret: "sec1"}); err == nil || !strings.Contains(err.Error(), "No secret with id 'sec1'") {
		t.Fatalf("missing secret: %v", err)
	}
	img, err := Open(path, block.Options{ReadOnly: true, NoIO: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	enc, _ := img.Describe()["format-specific"].(map[string]any)["data"].(map[string]any)["encrypt"].(map[string]any)
	if enc["format"] != "luks" || enc["cipher-alg"] != "aes-256" || enc["payload-offset"] != int64(2068480) {
		t.Fatalf("encrypt info %v", enc)
	}
	if _, err := img.ReadAt(make([]byte, 512), 0); err == nil {
		t.Fatal("data read without the key succeeded")
	}
}

// TestEncryptedReadsQemuImage: an image qemu-img creates and qemu-io
// writes decrypts in Petrel to the same bytes as in qemu-img.
func TestEncryptedReadsQemuImage(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	path := filepath.Join(t.TempDir(), "q.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=sec0,data="+testSecret,
		"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,cluster_size=4096", path, "1M")
	args := append(append([]string{}, qemuSecretArgs(path)...), "-c", "write -P 0x11 0 5000", "-c", "write -P 0x22 300000 9000")
	run(t, "qemu-io", args...)
	img, err := Open(path, block.Options{ReadOnly: true, Secrets: testSecrets, KeySecret: "sec0"})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	assertEqual(t, "petrel vs qemu-img", readAll(t, img), qemuReadEncrypted(t, path))
}
