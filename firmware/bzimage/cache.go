package bzimage

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// ErrNoPVH means the kernel has no ELF PVH entry note: boot it by the 64-bit protocol.
var ErrNoPVH = errors.New("kernel has no PVH entry note")

// DefaultCacheDir is os.UserCacheDir()/petrel/kernels. Where there is no
// user cache directory ($HOME and $XDG_CACHE_HOME unset, as in a bare
// initramfs) it is a private directory of this user under the temporary
// directory, and note says so (for -v); the boot path never changes
// because a cache is missing.
func DefaultCacheDir() (dir, note string, err error) {
	d, uerr := os.UserCacheDir()
	if uerr == nil {
		return filepath.Join(d, "petrel", "kernels"), "", nil
	}
	dir, err = privateTempDir(fmt.Sprintf("petrel-%d-kernels", os.Getuid()))
	if err != nil {
		return "", "", fmt.Errorf("no user cache directory (%v), and %w", uerr, err)
	}
	return dir, fmt.Sprintf("no user cache directory (%v): caching decompressed kernels in %s", uerr, dir), nil
}

// privateTempDir is os.TempDir()/name, created with mode 0700 and used
// only while it is a real directory owned by this user and closed to
// others (the temporary directory is shared: another user could have
// planted the name first).
func privateTempDir(name string) (string, error) {
	dir := filepath.Join(os.TempDir(), name)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("checking %s: %w", dir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() || fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s is not a private directory of this user", dir)
	}
	return dir, nil
}

// resolveCacheDir is cacheDir, or DefaultCacheDir when it is empty.
func resolveCacheDir(cacheDir string) (string, error) {
	if cacheDir != "" {
		return cacheDir, nil
	}
	d, _, err := DefaultCacheDir()
	return d, err
}

// LoadPVH reads the bzImage at path and returns its vmlinux ELF and PVH
// entry. Decompressed kernels are cached in cacheDir (DefaultCacheDir when
// empty) under the SHA-256 of the bzImage, written atomically by rename,
// so a second boot of the same kernel skips decompression (cached is true).
// A cache entry that fails to parse is ignored and rewritten. Errors that
// wrap ErrNoPVH, ErrUnsupported or ErrNotBzImage mean: use the 64-bit protocol.
func LoadPVH(path, cacheDir string) (elfData []byte, entry uint32, cached bool, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, false, fmt.Errorf("reading kernel: %w", err)
	}
	if cacheDir, err = resolveCacheDir(cacheDir); err != nil {
		return nil, 0, false, err
	}
	// The key is the bzImage's content, not its path or mtime: a kernel
	// rebuilt in place never meets a stale entry, and two paths to one
	// kernel share one. Entries are never evicted; the directory is the
	// user's to clean.
	sum := sha256.Sum256(data)
	file := filepath.Join(cacheDir, hex.EncodeToString(sum[:])+".vmlinux")
	// A hit is trusted only as far as its PVH note parses: the cache
	// directory is the user's, and a damaged entry is rebuilt below.
	if c, err := os.ReadFile(file); err == nil {
		if e, ok := FindPVHEntry(c); ok {
			return c, e, true, nil
		}
	}
	img, err := Parse(data)
	if err != nil {
		return nil, 0, false, fmt.Errorf("%s: %w", path, err)
	}
	elfData, entry, err = img.PVHKernel()
	if err != nil {
		return nil, 0, false, fmt.Errorf("%s: %w", path, err)
	}
	// A cache that cannot be written costs only speed: the kernel is still returned.
	_ = writeAtomic(cacheDir, file, elfData)
	return elfData, entry, false, nil
}

// OpenPVH is LoadPVH for loaders that copy the kernel's segments straight
// from the file into guest memory (ReadAt) instead of holding the whole
// decompressed vmlinux in the VMM's heap: on a cache hit the bzImage is
// only hashed (streamed) and the cached vmlinux opened. The caller closes f.
// On a miss the kernel is decompressed and cached first; when the cache
// cannot be written the ELF is served from a temporary file, removed on open.
// cached is true only when the entry was there before the call, so -v can
// tell a cache hit from a decompression that just filled the cache.
func OpenPVH(path, cacheDir string) (f *os.File, entry uint32, cached bool, err error) {
	if cacheDir, err = resolveCacheDir(cacheDir); err != nil {
		return nil, 0, false, err
	}
	k, err := os.Open(path)
	if err != nil {
		return nil, 0, false, fmt.Errorf("reading kernel: %w", err)
	}
	fi, err := k.Stat()
	if err != nil {
		k.Close()
		return nil, 0, false, fmt.Errorf("reading kernel: %w", err)
	}
	// A file seen before, unchanged since (statKey), skips the hash: under
	// an emulated CPU (nested, TCG) SHA-256 of a 14 MB bzImage takes about
	// 0.6 s, half of a cached kernel's load.
	key, keyed := statKey(path, fi)
	if keyed {
		if sum, err := os.ReadFile(filepath.Join(cacheDir, key+".sum")); err == nil && validDigest(sum) {
			if f, e, ok := openCached(filepath.Join(cacheDir, string(sum)+".vmlinux")); ok {
				k.Close()
				return f, e, true, nil
			}
		}
	}
	h := sha256.New()
	_, err = io.Copy(h, k)
	k.Close()
	if err != nil {
		return nil, 0, false, fmt.Errorf("reading kernel: %w", err)
	}
	digest := hex.EncodeToString(h.Sum(nil))
	file := filepath.Join(cacheDir, digest+".vmlinux")
	if keyed {
		// Best effort, as the cache itself: a missing index costs a hash.
		defer writeAtomic(cacheDir, filepath.Join(cacheDir, key+".sum"), []byte(digest))
	}
	if f, e, ok := openCached(file); ok {
		return f, e, true, nil
	}
	elfData, entry, _, err := LoadPVH(path, cacheDir)
	if err != nil {
		return nil, 0, false, err
	}
	if f, e, ok := openCached(file); ok {
		return f, e, false, nil
	}
	// No usable cache: an unlinked temporary file keeps the interface.
	tmp, err := os.CreateTemp("", "petrel-vmlinux-*")
	if err != nil {
		return nil, 0, false, fmt.Errorf("temporary kernel file: %w", err)
	}
	os.Remove(tmp.Name())
	if _, err := tmp.Write(elfData); err != nil {
		tmp.Close()
		return nil, 0, false, fmt.Errorf("temporary kernel file: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		tmp.Close()
		return nil, 0, false, fmt.Errorf("temporary kernel file: %w", err)
	}
	return tmp, entry, false, nil
}

// validDigest reports whether b is a SHA-256 digest in lower-case hex (an
// index entry names a cache file with it: nothing else may reach a path).
func validDigest(b []byte) bool {
	if len(b) != 2*sha256.Size {
		return false
	}
	for _, c := range b {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// openCached opens a cache entry and checks its PVH note.
func openCached(file string) (*os.File, uint32, bool) {
	f, err := os.Open(file)
	if err != nil {
		return nil, 0, false
	}
	st, err := f.Stat()
	if err == nil {
		if e, ok := FindPVHEntryReader(f, st.Size()); ok {
			return f, e, true
		}
	}
	f.Close()
	return nil, 0, false
}

// writeAtomic writes data to file via a temporary file in dir and rename,
// so a concurrent reader sees the old file or the whole new one.
func writeAtomic(dir, file string, data []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating kernel cache: %w", err)
	}
	// The temporary file is in dir itself, so the rename cannot cross a
	// file system. Two processes caching the same kernel at once both
	// rename a complete, identical file; the last one wins.
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("creating kernel cache entry: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing kernel cache entry: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing kernel cache entry: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("installing kernel cache entry: %w", err)
	}
	return nil
}
