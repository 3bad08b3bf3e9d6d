#!/usr/bin/env python3
"""Writes a root file system tarball for `podman import` / `docker import`, made of files of
this (Debian bookworm) host's installed packages: the stand-in for `debian:bookworm-slim`
that deploy/compose-check.sh uses where no image registry answers (IMAGES=local). Copying
what is installed takes seconds, where debootstrap downloads and unpacks a system for
minutes.

    host-rootfs.py OUT.tar            glibc, bash, coreutils, passwd (useradd), curl, busybox
    host-rootfs.py --jre OUT.tar      the same plus the headless JRE and /usr/share/java
                                      (Debian's ZooKeeper jars), for the ZooKeeper stand-in
    host-rootfs.py --debian OUT.tar   a fresh Debian: the `required` packages and apt (what
                                      `debian:bookworm` holds), with their dpkg records and
                                      this host's apt sources, so that apt-get in it installs
                                      from Debian's mirror (deploy/fresh-check.sh)

Packages: the roots below and their installed dependencies (Depends, Pre-Depends; the first
installed alternative), listed by dpkg, without documentation. The images built on it then
skip their `apt-get install` (what they need is there), so no package archive is needed
either. Fails (exit 1) when a root package is not installed, naming it.
"""

import io
import os
import subprocess
import sys
import tarfile

ROOTS = ["base-files", "base-passwd", "bash", "dash", "coreutils", "passwd", "login", "curl",
         "busybox", "ca-certificates"]
JRE_ROOTS = ["default-jre-headless"]
# With --jre: ZooKeeper's own package without its dependencies (they reach far beyond what
# the server needs: Tomcat, Spring, JUnit...); the jars it loads come from /usr/share/java,
# taken whole.
ZOOKEEPER = "libzookeeper-java"
SKIP_PREFIXES = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/locale/",
                 "/usr/share/lintian/", "/usr/share/bug/", "/usr/share/maven-repo/")


def dpkg(fmt):
    out = subprocess.run(["dpkg-query", "-W", "-f", fmt], check=True, capture_output=True,
                         text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def installed_packages():
    """name -> (depends string); provided virtual name -> providing package."""
    deps, provides = {}, {}
    for name, status, depends, pre, prov in dpkg(
            "${Package}\t${db:Status-Status}\t${Depends}\t${Pre-Depends}\t${Provides}\n"):
        if status != "installed":
            continue
        deps[name] = ", ".join(d for d in (depends, pre) if d)
        for p in prov.split(","):
            p = p.strip().split(" ")[0]
            if p:
                provides.setdefault(p, name)
    return deps, provides


def closure(roots, deps, provides):
    def resolve(name):
        name = name.split(":")[0]
        return name if name in deps else provides.get(name)

    missing = [r for r in roots if resolve(r) is None]
    if missing:
        sys.exit(f"host-rootfs: not installed on this host: {' '.join(missing)} "
                 f"(apt-get install {' '.join(missing)})")
    seen, stack = set(), list(roots)
    while stack:
        pkg = resolve(stack.pop())
        if pkg is None or pkg in seen:
            continue
        seen.add(pkg)
        for alternatives in deps[pkg].split(","):
            for choice in alternatives.split("|"):
                dep = resolve(choice.strip().split(" ")[0]) if choice.strip() else None
                if dep:
                    stack.append(dep)
                    break
    return seen


def canonical(path):
    """The path with its directories resolved (/lib/x.so → /usr/lib/x.so on a merged-/usr
    system), the last component kept as it is (a symlink stays a symlink)."""
    parent, base = os.path.split(path)
    return os.path.join(os.path.realpath(parent), base)


def required_packages():
    return [name for name, status, prio in dpkg("${Package}\t${db:Status-Status}\t${Priority}\n")
            if status == "installed" and prio == "required"] + ["apt"]


def dpkg_records(packages):
    """The dpkg database of `packages` only: (path, bytes) of /var/lib/dpkg/status, and the
    paths of their /var/lib/dpkg/info files (file lists, maintainer scripts)."""
    stanzas = []
    with open("/var/lib/dpkg/status") as f:
        for stanza in f.read().split("\n\n"):
            name = next((line[9:] for line in stanza.splitlines() if line.startswith("Package: ")),
                        None)
            if name in packages:
                stanzas.append(stanza.strip("\n"))
    info = []
    for name in os.listdir("/var/lib/dpkg/info"):
        pkg = name.rsplit(".", 1)[0].split(":")[0]
        if pkg in packages:
            info.append(os.path.join("/var/lib/dpkg/info", name))
    return ("\n\n".join(stanzas) + "\n").encode(), info


def main():
    args = sys.argv[1:]
    jre = "--jre" in args
    debian = "--debian" in args
    args = [a for a in args if a not in ("--jre", "--debian")]
    if len(args) != 1 or (jre and debian):
        sys.exit(__doc__)
    out = args[0]
    deps, provides = installed_packages()
    roots = required_packages() if debian else ROOTS + (JRE_ROOTS if jre else [])
    packages = closure(roots, deps, provides)
    if jre:
        if ZOOKEEPER not in deps:
            sys.exit(f"host-rootfs: not installed on this host: {ZOOKEEPER} "
                     "(apt-get install zookeeper)")
        packages.add(ZOOKEEPER)
    paths = set()
    for pkg in sorted(packages):
        listed = subprocess.run(["dpkg-query", "-L", pkg], capture_output=True, text=True).stdout
        paths.update(p for p in listed.splitlines() if p.startswith("/"))
    if jre:
        for d, _, files in os.walk("/usr/share/java"):
            paths.update(os.path.join(d, f) for f in files)
    # What maintainer scripts make rather than ship: the loader cache, and the alternatives
    # links (`/usr/bin/java`) to what is taken.
    extra = ["/etc/ld.so.cache", "/etc/ld.so.conf"]
    status = None
    if debian:
        status, info = dpkg_records(packages)
        paths.update(info)
        # apt's sources and keys; PAM's files that pam-auth-update writes (not in any
        # package's file list; chfn and su fail without them).
        for d, _, files in [w for top in ("/etc/apt", "/etc/pam.d", "/var/lib/pam")
                            for w in os.walk(top)]:
            paths.update(os.path.join(d, f) for f in files if ".disabled" not in f)
        extra += ["/var/lib/dpkg/alternatives", "/var/lib/dpkg/diversions"]
    taken = {os.path.realpath(p) for p in paths if os.path.isfile(p)}
    for d in ("/usr/bin", "/usr/sbin"):
        for name in os.listdir(d):
            link = os.path.join(d, name)
            target = os.readlink(link) if os.path.islink(link) else ""
            if target.startswith("/etc/alternatives/") and os.path.realpath(link) in taken:
                extra += [link, target]
    paths.update(extra)

    with tarfile.open(out, "w") as tar:
        added = set()

        def add_dir(arc, mode=0o755):
            if arc in added:
                return
            info = tarfile.TarInfo(arc)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
            added.add(arc)

        # Merged /usr: the top-level links, as on the host.
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            if os.path.islink("/" + name):
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink("/" + name)
                tar.addfile(info)
                added.add(name)
        # What every root file system has, empty.
        for d, mode in (("tmp", 0o1777), ("var/tmp", 0o1777), ("root", 0o700), ("home", 0o755),
                        ("run", 0o755), ("proc", 0o555), ("sys", 0o555), ("dev", 0o755),
                        ("var/log", 0o755), ("var/lib/dpkg", 0o755), ("etc/dpkg", 0o755),
                        ("var/lib/dpkg/updates", 0o755), ("var/lib/apt/lists/partial", 0o700),
                        ("var/cache/apt/archives/partial", 0o700)):
            parts = d.split("/")
            for i in range(1, len(parts)):
                add_dir("/".join(parts[:i]))
            add_dir(d, mode)
        # Accounts: Debian's initial ones (base-passwd), not this host's.
        for name, source, mode in (("passwd", "passwd.master", 0o644),
                                   ("group", "group.master", 0o644)):
            with open(f"/usr/share/base-passwd/{source}", "rb") as f:
                data = f.read()
            info = tarfile.TarInfo(f"etc/{name}")
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
            added.add(f"etc/{name}")
        for name in ("shadow", "gshadow"):
            source = "passwd" if name == "shadow" else "group"
            with open(f"/usr/share/base-passwd/{source}.master") as f:
                lines = [line.split(":")[0] + (":*:19000:0:99999:7:::" if name == "shadow"
                                                else ":*::") for line in f if line.strip()]
            data = ("\n".join(lines) + "\n").encode()
            info = tarfile.TarInfo(f"etc/{name}")
            info.size, info.mode = len(data), 0o640
            tar.addfile(info, io.BytesIO(data))
            added.add(f"etc/{name}")

        if status is not None:
            # This host's overrides name its groups (ssl-cert...): a fresh system has none.
            for arc, data in (("var/lib/dpkg/status", status), ("var/lib/dpkg/statoverride", b"")):
                info = tarfile.TarInfo(arc)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
                added.add(arc)
        for path in sorted(paths):
            if path.startswith(SKIP_PREFIXES) or not os.path.lexists(path):
                continue
            arc = canonical(path).lstrip("/")
            if not arc or arc in added:
                continue
            parts = arc.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent not in added:
                    st = os.stat("/" + parent)
                    add_dir(parent, st.st_mode & 0o7777)
            if os.path.isdir(path) and not os.path.islink(path):
                add_dir(arc, os.stat(path).st_mode & 0o7777)
                continue
            info = tar.gettarinfo(path, arcname=arc)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if info.isfile():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            elif info.issym() or info.islnk():
                tar.addfile(info)
            added.add(arc)


if __name__ == "__main__":
    main()
