package e2e

// DeviceSet is the device set of VM-TESTING.md: real drivers whose loads
// cascade (virtio_pci to the virtio drivers, xhci to usbhid, HDA to its
// codecs). Loading every modalias in sysfs to a fixpoint settles at about
// 67 modules. Use it with DeviceSetQEMUArgs.
var DeviceSet = []string{
	"e1000,netdev=n0", "virtio-net-pci,netdev=n1", "virtio-rng-pci", "virtio-balloon-pci",
	"virtio-serial-pci", "virtio-scsi-pci", "qemu-xhci", "usb-kbd", "usb-tablet", "usb-ehci",
	"intel-hda", "hda-duplex,audiodev=snd0", "ES1370,audiodev=snd0", "i6300esb", "pvpanic", "ahci",
	"rtl8139,netdev=n2", "pcnet,netdev=n3", "lsi53c895a", "megasas",
}

// DeviceSetQEMUArgs are the backends DeviceSet's devices refer to: user
// networking that reaches nothing, and a silent audio device.
var DeviceSetQEMUArgs = []string{
	"-netdev", "user,id=n0,restrict=on", "-netdev", "user,id=n1,restrict=on",
	"-netdev", "user,id=n2,restrict=on", "-netdev", "user,id=n3,restrict=on",
	"-audiodev", "none,id=snd0",
}
