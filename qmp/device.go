package qmp

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// deviceDrivers lists the device_add models Petrel has and the properties
// each takes. Values arrive as JSON strings, numbers or booleans; qdev
// properties accept numbers and booleans spelled as strings too, so do we.
var deviceDrivers = map[string]map[string]argType{
	"virtio-blk-pci": {
		"drive":      tStr, // a blockdev-add node name or a -drive id
		"file":       tStr, // Petrel extension: open this image directly
		"format":     tStr, // with "file": qcow2, qed or raw (default: probe)
		"readonly":   tBool,
		"serial":     tStr,
		"num-queues": tInt,
	},
	"ivshmem-plain": {
		"memdev": tStr, // an -object memory-backend id
		"shm":    tStr, // Petrel extension: POSIX shm name or file path
		"size":   tStr, // with "shm": size with suffix (4M)
		"master": tBool,
	},
	"ivshmem-doorbell": {
		"chardev":   tStr, // a -chardev socket id
		"socket":    tStr, // Petrel extension: server socket path
		"vectors":   tInt,
		"ioeventfd": tBool,
		"master":    tBool,
	},
}

// ParseSlot reads a PCI "addr" property: "5", "0x5", "05.0", "0x1f.0" or a
// JSON number. Only function 0 exists on Petrel's bus.
func ParseSlot(v any) (int, error) {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = x.String()
	case string:
		s = x
	default:
		return 0, fmt.Errorf("Property 'addr' expects a PCI address such as '0x5' or '05.0'")
	}
	slotStr, fnStr, hasFn := strings.Cut(s, ".")
	slot, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(slotStr), "0x"), 16, 8)
	if err != nil || slot > 31 {
		return 0, fmt.Errorf("Property 'addr' has invalid value '%s': slot must be 0x0..0x1f", s)
	}
	if hasFn {
		fn, err := strconv.ParseUint(fnStr, 16, 8)
		if err != nil || fn > 7 {
			return 0, fmt.Errorf("Property 'addr' has invalid value '%s'", s)
		}
		if fn != 0 {
			return 0, fmt.Errorf("Property 'addr' has invalid value '%s': only function 0 is supported", s)
		}
	}
	return int(slot), nil
}

func runDeviceAdd(s *Server, a map[string]any) (any, func(), error) {
	driver := a["driver"].(string)
	props, ok := deviceDrivers[driver]
	if !ok {
		return nil, nil, Errorf("'%s' is not a valid device model name", driver)
	}
	req := DeviceAddRequest{Driver: driver, Slot: -1, Props: map[string]any{}}
	if id, ok := a["id"].(string); ok {
		if !validID(id) {
			return nil, nil, Errorf("Parameter 'id' expects an identifier")
		}
		req.ID = id
	}
	if bus, ok := a["bus"].(string); ok && bus != "pci.0" && bus != "pcie.0" {
		return nil, nil, Errorf("Bus '%s' not found", bus)
	}
	if v, ok := a["addr"]; ok {
		slot, err := ParseSlot(v)
		if err != nil {
			return nil, nil, Errorf("%v", err)
		}
		req.Slot = slot
	}
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch k {
		case "driver", "id", "bus", "addr":
			continue
		}
		t, ok := props[k]
		if !ok {
			return nil, nil, Errorf("Property '%s.%s' not found", driver, k)
		}
		v, err := coerce(a[k], t)
		if err != nil {
			return nil, nil, Errorf("Property '%s.%s' %v", driver, k, err)
		}
		req.Props[k] = v
	}
	if err := s.m.DeviceAdd(req); err != nil {
		return nil, nil, err
	}
	return nil, nil, nil
}

// coerce converts a property value to its type the way qdev does.
func coerce(v any, t argType) (any, error) {
	switch t {
	case tStr:
		switch x := v.(type) {
		case string:
			return x, nil
		case json.Number:
			return x.String(), nil
		}
		return nil, fmt.Errorf("expects a string")
	case tBool:
		switch x := v.(type) {
		case bool:
			return x, nil
		case string:
			switch x {
			case "on", "true", "yes":
				return true, nil
			case "off", "false", "no":
				return false, nil
			}
		}
		return nil, fmt.Errorf("expects a boolean ('on' or 'off')")
	case tInt:
		var s string
		switch x := v.(type) {
		case json.Number:
			s = x.String()
		case string:
			s = x
		default:
			return nil, fmt.Errorf("expects an integer")
		}
		n, err := strconv.ParseInt(s, 0, 64)
		if err != nil {
			return nil, fmt.Errorf("expects an integer")
		}
		return n, nil
	}
	return v, nil
}

// validID follows QEMU's id rule: a letter, then letters, digits, '-', '.', '_'.
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && (r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_'):
		default:
			return false
		}
	}
	return true
}

func runBlockdevAdd(s *Server, a map[string]any) (any, func(), error) {
	req := BlockdevAddRequest{Driver: a["driver"].(string), NodeName: a["node-name"].(string)}
	switch req.Driver {
	case "qcow2", "qed", "raw":
	default:
		return nil, nil, Errorf("Invalid parameter '%s'", req.Driver)
	}
	if !validID(req.NodeName) {
		return nil, nil, Errorf("Invalid node-name: '%s'", req.NodeName)
	}
	switch f := a["file"].(type) {
	case string:
		req.Filename = f
	case map[string]any:
		if d, _ := f["driver"].(string); d != "file" && d != "host_device" {
			return nil, nil, Errorf("Parameter 'file.driver' must be 'file' or 'host_device'")
		}
		fn, ok := f["filename"].(string)
		if !ok {
			return nil, nil, Errorf("Parameter 'file.filename' is missing")
		}
		req.Filename = fn
	default:
		return nil, nil, Errorf("Invalid parameter type for 'file', expected: BlockdevRef")
	}
	if ro, ok := a["read-only"].(bool); ok {
		req.ReadOnly = ro
	}
	if c, ok := a["cache"].(map[string]any); ok {
		if d, ok := c["direct"].(bool); ok {
			req.Direct = d
		}
	}
	return nil, nil, s.m.BlockdevAdd(req)
}
