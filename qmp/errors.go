package qmp

import "fmt"

// QMP error classes, as QEMU names them.
const (
	ClassGeneric         = "GenericError"
	ClassCommandNotFound = "CommandNotFound"
	ClassDeviceNotFound  = "DeviceNotFound"
)

// Error is a QMP error reply. Machine methods return it to choose the class;
// any other error is reported as GenericError with its text.
type Error struct {
	// Class is one of the Class constants; clients such as libvirt
	// branch on it, so it must be QEMU's class for the same failure.
	Class string
	// Desc is the human-readable text, worded as QEMU's where the iotests
	// or clients compare it.
	Desc string
}

// Error formats the error for logs; on the wire only Desc is sent, with
// Class beside it.
func (e *Error) Error() string { return e.Class + ": " + e.Desc }

// Errorf returns a GenericError.
func Errorf(format string, args ...any) error {
	return &Error{Class: ClassGeneric, Desc: fmt.Sprintf(format, args...)}
}

// DeviceNotFound returns a DeviceNotFound error for id, worded as QEMU does.
func DeviceNotFound(id string) error {
	return &Error{Class: ClassDeviceNotFound, Desc: fmt.Sprintf("Device '%s' not found", id)}
}
