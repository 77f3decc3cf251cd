package imgtool

import (
	"fmt"

	"github.com/petrel-vmm/petrel/block"
)

func init() {
	register("check", "check an image: check [-f fmt] [-r leaks|all] [--output=human|json] [-q] file", runCheck)
}

// Exit codes of qemu-img check (qemu-img.c, img_check): scripts and
// iotests test them, so they are kept exactly. A check that could not
// finish wins over corruption, corruption over leaks.
const (
	checkClean       = 0
	checkIncomplete  = 1
	checkCorrupt     = 2
	checkLeaksOnly   = 3
	checkUnsupported = 63
)

// runCheck is qemu-img check: report (and with -r, repair) an image's
// metadata. The engine's messages go to stderr as they come, the summary
// to stdout; with -r the image is checked a second time after a repair
// that changed something, and that second result is the one reported and
// the one the exit code follows, as qemu-img does ("Double checking the
// fixed image now...").
func runCheck(t *tool, args []string) int {
	p, err := optSpec{short: "f:hr:T:qU", long: []string{"output=", "repair=", "object=", "image-opts", "force-share"}}.parse(args)
	if err != nil {
		return t.fail("%v", err)
	}
	if err := t.commonOptions(p); err != nil {
		return t.fail("%v", err)
	}
	if len(p.args) != 1 {
		return t.fail("Expecting one image file name")
	}
	out := p.get("output")
	if out != "" && out != "human" && out != "json" {
		return t.fail("--output must be used with human or json as argument.")
	}
	// -r and --repair are the same option; the last one given wins.
	mode := block.RepairNone
	r := p.get("r")
	if p.has("repair") {
		r = p.get("repair")
	}
	switch r {
	case "":
	case "leaks":
		mode = block.RepairLeaks
	case "all":
		mode = block.RepairAll
	default:
		return t.fail("Invalid option for -r: '%s'", r)
	}
	direct, err := cacheDirect(p.get("T"))
	if err != nil {
		return t.fail("%v", err)
	}
	path := p.args[0]
	// The image is opened without its backing file: a check concerns
	// this layer's metadata, and a missing backing file does not stop
	// it. A repair opens it writable even when it is marked corrupt
	// (block.Options.Repair); a plain check never writes.
	img, err := t.openImage(path, p.get("f"), block.Options{ReadOnly: mode == block.RepairNone, Repair: mode != block.RepairNone, NoBacking: true, DirectIO: direct})
	if err != nil {
		return t.fail("%v", err)
	}
	defer img.Close()
	c, ok := img.(block.Checker)
	if !ok {
		// raw: qemu-img prints the JSON skeleton it has, then refuses
		// with exit code 63 (iotests run check on every format).
		if out == "json" {
			fmt.Fprintln(t.stdout, prettyJSON(object{{"check-errors", 0}, {"filename", path}, {"format", img.Format()}}))
		}
		t.errorf("This image format does not support checks")
		return checkUnsupported
	}
	res, err := c.Check(mode)
	for _, m := range res.Messages {
		fmt.Fprintln(t.stderr, m)
	}
	if err != nil {
		// The check itself failed (an unreadable table, a repair that
		// cannot proceed): exit code 1, as qemu-img's "Check failed",
		// after the lines the engine printed on the way.
		t.errorf("Check failed: %v", err)
		return checkIncomplete
	}
	if mode != block.RepairNone && (res.CorruptionsFixed > 0 || res.LeaksFixed > 0) {
		if out != "json" && !p.has("q") {
			fmt.Fprintf(t.stdout, "The following inconsistencies were found and repaired:\n\n    %d leaked clusters\n    %d corruptions\n\nDouble checking the fixed image now...\n", res.LeaksFixed, res.CorruptionsFixed)
		}
		again, err := c.Check(block.RepairNone)
		if err != nil {
			t.errorf("Check failed: %v", err)
			return checkIncomplete
		}
		// The counts of what was fixed come from the first pass; all
		// else (what is still wrong, the statistics) from the second.
		again.CorruptionsFixed, again.LeaksFixed = res.CorruptionsFixed, res.LeaksFixed
		res = again
	}
	if out == "json" {
		fmt.Fprintln(t.stdout, prettyJSON(checkJSON(res, path, img.Format())))
	} else if !p.has("q") {
		t.printCheck(res)
	}
	switch {
	case res.CheckErrors > 0:
		return checkIncomplete
	case res.Corruptions > 0:
		return checkCorrupt
	case res.Leaks > 0:
		return checkLeaksOnly
	}
	return checkClean
}

// checkJSON is qemu-img check --output=json. qemu-img prints the keys in
// the order its QDict's hash buckets hold them (tdb_hash of the key modulo
// 512, ascending), which is the order below: image-end-offset,
// compressed-clusters, total-clusters, corruptions, corruptions-fixed,
// check-errors, leaks, leaks-fixed, allocated-clusters, filename, format,
// fragmented-clusters. Each count is present only when it is not zero, as
// QEMU leaves has_* false for zero counts (check-errors, filename and
// format are always there).
func checkJSON(r block.CheckResult, path, format string) object {
	o := object{}
	setNonZero := func(k string, v int64) {
		if v > 0 {
			o.set(k, v)
		}
	}
	setNonZero("image-end-offset", r.ImageEndOffset)
	setNonZero("compressed-clusters", r.CompressedClusters)
	setNonZero("total-clusters", r.TotalClusters)
	setNonZero("corruptions", int64(r.Corruptions))
	setNonZero("corruptions-fixed", int64(r.CorruptionsFixed))
	o.set("check-errors", r.CheckErrors)
	setNonZero("leaks", int64(r.Leaks))
	setNonZero("leaks-fixed", int64(r.LeaksFixed))
	setNonZero("allocated-clusters", r.AllocatedClusters)
	o.set("filename", path)
	o.set("format", format)
	setNonZero("fragmented-clusters", r.FragmentedClusters)
	return o
}

// printCheck prints a result as qemu-img check's human output: each
// kind of problem its own paragraph, "No errors" only when there is none
// at all, then the allocation statistics when any cluster is allocated
// (iotest 313: an image whose clusters were all freed prints none) and
// the image end offset when the format knows it.
func (t *tool) printCheck(r block.CheckResult) {
	w := t.stdout
	if r.Corruptions > 0 {
		fmt.Fprintf(w, "\n%d errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n", r.Corruptions)
	}
	if r.Leaks > 0 {
		fmt.Fprintf(w, "\n%d leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n", r.Leaks)
	}
	if r.CheckErrors > 0 {
		fmt.Fprintf(w, "\n%d internal errors have occurred during the check.\n", r.CheckErrors)
	}
	if r.Corruptions == 0 && r.Leaks == 0 && r.CheckErrors == 0 {
		fmt.Fprintln(w, "No errors were found on the image.")
	}
	if r.TotalClusters > 0 && r.AllocatedClusters > 0 {
		tc := float64(r.TotalClusters)
		fmt.Fprintf(w, "%d/%d = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
			r.AllocatedClusters, r.TotalClusters, float64(r.AllocatedClusters)*100/tc,
			float64(r.FragmentedClusters)*100/float64(r.AllocatedClusters),
			float64(r.CompressedClusters)*100/float64(r.AllocatedClusters))
	}
	if r.ImageEndOffset > 0 {
		fmt.Fprintf(w, "Image end offset: %d\n", r.ImageEndOffset)
	}
}
