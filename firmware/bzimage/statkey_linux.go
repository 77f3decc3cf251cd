package bzimage

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// statKey names a kernel file as it is now: its absolute path, device,
// inode, size, and modification and change times. Any write to the file,
// or its replacement by another file, changes the change time (set by the
// kernel, not by utimes) or the inode, so a key seen before means content
// hashed before. ok is false when the file system gives no such identity.
func statKey(path string, fi os.FileInfo) (key string, ok bool) {
	st, isStat := fi.Sys().(*syscall.Stat_t)
	abs, err := filepath.Abs(path)
	if !isStat || err != nil {
		return "", false
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%d\x00%d\x00%d.%09d\x00%d.%09d", abs, st.Dev, st.Ino, fi.Size(),
		st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
	return hex.EncodeToString(h.Sum(nil)), true
}
