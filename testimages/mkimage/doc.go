// Package mkimage is the mkimage command: it builds test disks and /usr images, installs an
// image into the inactive slot and emulates a boot, all on image files.
//
//	mkimage disk -o disk.img -version 1.0.0 [-size 512MiB] [-board amd64-usr] [-usr usr.img]
//	mkimage usr -o usr.img -version 1.0.1 [-base usr-1.0.0.img -change 0.05] [-size 170MiB] [-broken]
//	mkimage install disk.img usr.img
//	mkimage boot disk.img [--json]
//
// Sizes take the suffixes K/KiB, M/MiB, G/GiB (powers of 1024). Main runs it in-process.
package mkimage
