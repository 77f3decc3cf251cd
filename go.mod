module github.com/petrel-vmm/petrel

go 1.26
