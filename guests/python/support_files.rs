// The `sockbox_guest` package as embedded in the sockbox binary (`host/src/python.rs` includes
// this list): each file's path relative to the guest's Python path entry, and its text. It
// lives beside the package so a module added or split here needs no edit in the host.
&[
    ("sockbox_guest/__init__.py", include_str!("sockbox_guest/__init__.py")),
    ("sockbox_guest/_addresses.py", include_str!("sockbox_guest/_addresses.py")),
    ("sockbox_guest/_control.py", include_str!("sockbox_guest/_control.py")),
    ("sockbox_guest/_dns.py", include_str!("sockbox_guest/_dns.py")),
    ("sockbox_guest/_errors.py", include_str!("sockbox_guest/_errors.py")),
    ("sockbox_guest/_loop.py", include_str!("sockbox_guest/_loop.py")),
    ("sockbox_guest/_resources.py", include_str!("sockbox_guest/_resources.py")),
    ("sockbox_guest/_server.py", include_str!("sockbox_guest/_server.py")),
    ("sockbox_guest/_sockets.py", include_str!("sockbox_guest/_sockets.py")),
    ("sockbox_guest/_streams.py", include_str!("sockbox_guest/_streams.py")),
    ("sockbox_guest/_tcp.py", include_str!("sockbox_guest/_tcp.py")),
    ("sockbox_guest/_udp.py", include_str!("sockbox_guest/_udp.py")),
]
