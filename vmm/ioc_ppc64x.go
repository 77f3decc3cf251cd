//go:build ppc64 || ppc64le

package vmm

// arch/powerpc/include/uapi/asm/ioctl.h: 3 direction bits at 29.
const (
	iocNone     = 1
	iocWrite    = 4
	iocRead     = 2
	iocDirShift = 29
)
