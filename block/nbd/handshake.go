package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// export is what the handshake learned about the export.
type export struct {
	size       int64
	flags      uint16 // transmission flags
	minBlock   uint32 // request alignment (1 when the server names none)
	maxBlock   uint32 // largest read or write payload
	structured bool   // structured replies negotiated
	metaID     uint32 // the metadata context's id, when hasMeta
	hasMeta    bool
}

// handshake runs the newstyle negotiation on rw (proto.md, "Handshake"):
// structured replies, the metadata context metaContext (none when
// empty), then NBD_OPT_GO for exportName with a block size request, or
// NBD_OPT_EXPORT_NAME when the server lacks NBD_OPT_GO (or the fixed
// newstyle). requireMeta makes a missing context an error (x-dirty-bitmap
// names one that must exist; base:allocation is optional).
func handshake(r *bufio.Reader, w io.Writer, exportName, metaContext string, requireMeta bool) (export, error) {
	var ex export
	if len(exportName) > maxString {
		return ex, fmt.Errorf("export name too long to send to server")
	}
	var b [18]byte
	if _, err := io.ReadFull(r, b[:16]); err != nil {
		return ex, fmt.Errorf("reading the NBD server greeting: %w", err)
	}
	if binary.BigEndian.Uint64(b[:]) != magicInit {
		return ex, protoErr("server greeting without NBDMAGIC")
	}
	switch m := binary.BigEndian.Uint64(b[8:]); m {
	case magicOption:
	case magicOldstyle:
		return ex, fmt.Errorf("server only supports the oldstyle NBD protocol, which petrel does not speak")
	default:
		return ex, protoErr("greeting magic %#x", m)
	}
	if _, err := io.ReadFull(r, b[:2]); err != nil {
		return ex, fmt.Errorf("reading the NBD handshake flags: %w", err)
	}
	serverFlags := binary.BigEndian.Uint16(b[:2])
	fixed := serverFlags&flagFixedNew != 0
	noZeroes := serverFlags&flagNoZeroes != 0
	var clientFlags uint32
	if fixed {
		clientFlags |= clientFixedNew
	}
	if noZeroes {
		clientFlags |= clientNoZeroes
	}
	binary.BigEndian.PutUint32(b[:4], clientFlags)
	if _, err := w.Write(b[:4]); err != nil {
		return ex, fmt.Errorf("sending the NBD client flags: %w", err)
	}
	// Without the fixed newstyle a server may drop the connection on an
	// option it does not know: only NBD_OPT_EXPORT_NAME is safe.
	if fixed {
		o := optionConn{r: r, w: w}
		ok, err := o.simpleOption(optStructured)
		if err != nil {
			return ex, err
		}
		ex.structured = ok
		if ok && metaContext != "" {
			if ex.metaID, ex.hasMeta, err = o.setMetaContext(exportName, metaContext); err != nil {
				return ex, err
			}
		}
		if requireMeta && !ex.hasMeta {
			return ex, fmt.Errorf("requested x-dirty-bitmap %s not found", metaContext)
		}
		done, err := o.goOption(exportName, &ex)
		if err != nil || done {
			return ex, err
		}
	} else if requireMeta {
		return ex, fmt.Errorf("requested x-dirty-bitmap %s not found", metaContext)
	}
	return ex, exportNameOption(r, w, exportName, noZeroes, &ex)
}

// optionConn sends options and reads their replies.
type optionConn struct {
	r *bufio.Reader
	w io.Writer
}

func (o optionConn) send(opt uint32, data []byte) error {
	b := make([]byte, 16+len(data))
	binary.BigEndian.PutUint64(b, magicOption)
	binary.BigEndian.PutUint32(b[8:], opt)
	binary.BigEndian.PutUint32(b[12:], uint32(len(data)))
	copy(b[16:], data)
	if _, err := o.w.Write(b); err != nil {
		return fmt.Errorf("sending NBD option %d: %w", opt, err)
	}
	return nil
}

// optReply is one option reply: its type and payload.
type optReply struct {
	typ  uint32
	data []byte
}

func (r optReply) isError() bool { return r.typ&(1<<31) != 0 }

// reply reads the next reply to option opt.
func (o optionConn) reply(opt uint32) (optReply, error) {
	var b [20]byte
	if _, err := io.ReadFull(o.r, b[:]); err != nil {
		return optReply{}, fmt.Errorf("reading the reply to NBD option %d: %w", opt, err)
	}
	if m := binary.BigEndian.Uint64(b[:]); m != magicOptReply {
		return optReply{}, protoErr("option reply magic %#x", m)
	}
	if got := binary.BigEndian.Uint32(b[8:]); got != opt {
		return optReply{}, protoErr("reply to option %d while waiting for %d", got, opt)
	}
	rep := optReply{typ: binary.BigEndian.Uint32(b[12:])}
	n := binary.BigEndian.Uint32(b[16:])
	if n > maxOptionReply {
		return optReply{}, protoErr("option reply of %d bytes", n)
	}
	rep.data = make([]byte, n)
	if _, err := io.ReadFull(o.r, rep.data); err != nil {
		return optReply{}, fmt.Errorf("reading the reply to NBD option %d: %w", opt, err)
	}
	return rep, nil
}

// replyError words an error reply as QEMU's client does.
func replyError(opt uint32, rep optReply) error {
	msg := ""
	if len(rep.data) > 0 {
		msg = "\nserver reported: " + string(rep.data)
	}
	switch rep.typ {
	case repErrUnsup:
		return fmt.Errorf("Unsupported option %d%s", opt, msg)
	case 1<<31 + 2:
		return fmt.Errorf("Denied by server for option %d%s", opt, msg)
	case 1<<31 + 3:
		return fmt.Errorf("Server rejected invalid option %d%s", opt, msg)
	case 1<<31 + 5:
		return fmt.Errorf("TLS negotiation required before option %d%s", opt, msg)
	case 1<<31 + 6:
		return fmt.Errorf("Requested export not available%s", msg)
	case 1<<31 + 7:
		return fmt.Errorf("Server shutting down before option %d%s", opt, msg)
	}
	return fmt.Errorf("Unknown error code when asking for option %d%s", opt, msg)
}

// simpleOption sends an option without data that is answered by one ACK;
// ok is false when the server does not support it.
func (o optionConn) simpleOption(opt uint32) (ok bool, err error) {
	if err := o.send(opt, nil); err != nil {
		return false, err
	}
	rep, err := o.reply(opt)
	switch {
	case err != nil:
		return false, err
	case rep.typ == repAck:
		return true, nil
	case rep.typ == repErrUnsup:
		return false, nil
	case rep.isError():
		return false, replyError(opt, rep)
	}
	return false, protoErr("reply type %d to option %d", rep.typ, opt)
}

// setMetaContext selects one metadata context for the export: its id,
// and whether the server has it.
func (o optionConn) setMetaContext(exportName, context string) (uint32, bool, error) {
	data := binary.BigEndian.AppendUint32(nil, uint32(len(exportName)))
	data = append(data, exportName...)
	data = binary.BigEndian.AppendUint32(data, 1)
	data = binary.BigEndian.AppendUint32(data, uint32(len(context)))
	data = append(data, context...)
	if err := o.send(optSetMetaContext, data); err != nil {
		return 0, false, err
	}
	var id uint32
	found := false
	for range 64 { // the server sends at most one context per query
		rep, err := o.reply(optSetMetaContext)
		if err != nil {
			return 0, false, err
		}
		switch {
		case rep.typ == repAck:
			return id, found, nil
		case rep.typ == repErrUnsup:
			return 0, false, nil
		case rep.isError():
			return 0, false, replyError(optSetMetaContext, rep)
		case rep.typ == repMetaContext:
			if len(rep.data) < 4 {
				return 0, false, protoErr("meta context reply of %d bytes", len(rep.data))
			}
			if string(rep.data[4:]) != context || found {
				return 0, false, protoErr("unexpected meta context %q", rep.data[4:])
			}
			id, found = binary.BigEndian.Uint32(rep.data), true
		default:
			return 0, false, protoErr("reply type %d to NBD_OPT_SET_META_CONTEXT", rep.typ)
		}
	}
	return 0, false, protoErr("too many replies to NBD_OPT_SET_META_CONTEXT")
}

// goOption sends NBD_OPT_GO asking for block sizes and fills ex from
// its info replies. done is false when the server does not know the
// option and the caller falls back to NBD_OPT_EXPORT_NAME.
func (o optionConn) goOption(exportName string, ex *export) (done bool, err error) {
	data := binary.BigEndian.AppendUint32(nil, uint32(len(exportName)))
	data = append(data, exportName...)
	data = binary.BigEndian.AppendUint16(data, 1)
	data = binary.BigEndian.AppendUint16(data, infoBlockSize)
	if err := o.send(optGo, data); err != nil {
		return false, err
	}
	ex.minBlock, ex.maxBlock = 1, defaultMaxBlock
	haveExport := false
	for range 64 {
		rep, err := o.reply(optGo)
		if err != nil {
			return false, err
		}
		switch {
		case rep.typ == repAck:
			if !haveExport {
				return false, protoErr("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT")
			}
			return true, nil
		case rep.typ == repErrUnsup:
			return false, nil
		case rep.isError():
			return false, replyError(optGo, rep)
		case rep.typ == repInfo:
			if err := readInfo(rep.data, ex, &haveExport); err != nil {
				return false, err
			}
		default:
			return false, protoErr("reply type %d to NBD_OPT_GO", rep.typ)
		}
	}
	return false, protoErr("too many replies to NBD_OPT_GO")
}

// readInfo takes one NBD_REP_INFO payload; unknown info types are
// ignored, as proto.md allows.
func readInfo(d []byte, ex *export, haveExport *bool) error {
	if len(d) < 2 {
		return protoErr("info reply of %d bytes", len(d))
	}
	switch binary.BigEndian.Uint16(d) {
	case infoExport:
		if len(d) != 12 {
			return protoErr("NBD_INFO_EXPORT of %d bytes", len(d))
		}
		if err := setExport(ex, binary.BigEndian.Uint64(d[2:]), binary.BigEndian.Uint16(d[10:])); err != nil {
			return err
		}
		*haveExport = true
	case infoBlockSize:
		if len(d) != 14 {
			return protoErr("NBD_INFO_BLOCK_SIZE of %d bytes", len(d))
		}
		minB, prefB, maxB := binary.BigEndian.Uint32(d[2:]), binary.BigEndian.Uint32(d[6:]), binary.BigEndian.Uint32(d[10:])
		// proto.md: the minimum is a power of two up to 64 KiB, the
		// preferred one no smaller, the maximum a multiple of the
		// minimum.
		if minB == 0 || minB&(minB-1) != 0 || minB > 64<<10 || prefB < minB || prefB&(prefB-1) != 0 ||
			maxB < minB || maxB%minB != 0 {
			return protoErr("block sizes %d/%d/%d", minB, prefB, maxB)
		}
		ex.minBlock, ex.maxBlock = minB, min(maxB, defaultMaxBlock)
		ex.maxBlock -= ex.maxBlock % minB
	}
	return nil
}

// setExport records the export's size and transmission flags.
func setExport(ex *export, size uint64, flags uint16) error {
	if size > 1<<63-1 {
		return protoErr("export size %d", size)
	}
	ex.size, ex.flags = int64(size), flags
	return nil
}

// exportNameOption ends the negotiation with NBD_OPT_EXPORT_NAME: the
// server answers with the size and flags (and 124 zero bytes unless both
// sides agreed to NO_ZEROES) or closes the connection.
func exportNameOption(r *bufio.Reader, w io.Writer, exportName string, noZeroes bool, ex *export) error {
	o := optionConn{r: r, w: w}
	if err := o.send(optExportName, []byte(exportName)); err != nil {
		return err
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("Requested export not available (server closed the connection)")
		}
		return fmt.Errorf("reading the export size: %w", err)
	}
	// Structured replies and the metadata context negotiated before
	// stay in force (proto.md: option state carries into transmission).
	ex.minBlock, ex.maxBlock = 1, defaultMaxBlock
	return setExport(ex, binary.BigEndian.Uint64(b), binary.BigEndian.Uint16(b[8:]))
}
