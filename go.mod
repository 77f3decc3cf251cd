module github.com/petrel-vmm/petrel

go 1.26.0

require (
	github.com/bobuhiro11/gokvm v0.0.8-0.20231003020000-f53faca69d28
	github.com/digitalocean/go-qemu v0.0.0-20250212194115-ee9b0668d242
	github.com/klauspost/compress v1.20.4
	github.com/pierrec/lz4/v4 v4.1.33
	github.com/ulikunitz/xz v0.5.17
	golang.org/x/sys v0.50.0
)

require github.com/digitalocean/go-libvirt v0.0.0-20220804181439-8648fbde413e // indirect
