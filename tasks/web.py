"""nginx in front of Galaxy: Galaxy at http(s)://<galaxy host>/, static files from nginx.

gunicorn listens on loopback only (galaxy_bind); nginx (Debian's) proxies to it,
serves Galaxy's static files itself and limits upload sizes. With a certificate
and key (paths on the Galaxy host, as admins keep them) it serves HTTPS and the
HTTP port redirects there. A new site is checked with `nginx -t` before nginx
reloads: a site nginx refuses never replaces the running one.

Debian's own default site is disabled: it holds the HTTP port as default_server.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.operations import apt, files, systemd

from tasks.common import any_changed, render
from tasks.model import Cluster
from tasks.operations import backup_of, config_file, fail, restore_commands, run, wait_until
from tasks.packages import packages_at_once
from tasks.platform import NGINX_SITE, PACKAGES_WEB
from tasks.checks import file_present

SITE = NGINX_SITE
SITE_ENABLED = "/etc/nginx/sites-enabled/galaxy"
DEBIAN_DEFAULT_SITE = "/etc/nginx/sites-enabled/default"
NGINX_WAIT = 30


def http_status_command(url: str) -> str:
    """A command that succeeds when something answers HTTP at `url` with any status
    (nginx with Galaxy not started yet answers 502)."""
    script = ("import http.client as h, sys, urllib.parse as p; u = p.urlsplit(sys.argv[1]); "
              "c = h.HTTPConnection(u.hostname, u.port, timeout=5); c.request('GET', u.path or '/'); c.getresponse()")
    return f"python3 -c {shlex.quote(script)} {shlex.quote(url)}"


@operation(is_idempotent=False)
def nginx_reloaded_if_valid(site: str, enabled: str, url: str):
    """`nginx -t`, then reload (or start). When nginx refuses the configuration, this
    run's backup of `site` is put back (on a first run the site is disabled instead),
    nginx keeps serving what it ran, and the host fails with nginx's words."""
    if not host.state.is_executing:
        yield StringCommand("true  # nginx -t, then reload: decided at execution")
        return
    ok, output = run("nginx -t 2>&1")
    if not ok:
        had_site = run(f"test -e {shlex.quote(backup_of(site))}")[0]
        restore = restore_commands([site]) if had_site else [f"rm -f {shlex.quote(enabled)}"]
        yield StringCommand(" && ".join(restore))
        yield fail(f"nginx refused the new Galaxy site ({site}); "
                   f"{'the previous one is back' if had_site else 'it is disabled'} and nginx still runs its old "
                   f"configuration. Fix the inventory (galaxy_* settings) and re-run. nginx -t said:\n{output}")
        return
    yield "systemctl reload-or-restart nginx"
    if not wait_until(http_status_command(url), NGINX_WAIT):
        yield fail(f"nginx does not answer at {url} {NGINX_WAIT} s after its reload:\n"
                   + run("journalctl -u nginx -n 20 --no-pager -o cat 2>&1")[1])


@deploy("nginx in front of Galaxy")
def install_web(cluster: Cluster) -> None:
    galaxy = cluster.galaxy
    if galaxy is None or host.name != galaxy.host.inventory_name:
        return
    front = galaxy.front
    if not packages_at_once(cluster):  # a first install: in the stack's apt run (tasks.packages)
        apt.packages(name="nginx (Debian's)", packages=list(PACKAGES_WEB), no_recommends=True)
    if front.tls:
        file_present(name=f"TLS certificate {front.tls_certificate} is on the Galaxy host", path=front.tls_certificate)
        file_present(name=f"TLS key {front.tls_key} is on the Galaxy host", path=front.tls_key)
        key = files.file(name=f"TLS key {front.tls_key}: 0600 root (a secret)", path=front.tls_key, user="root",
                         group="root", mode="0600", touch=False)
    site = config_file(name=f"nginx site for Galaxy ({SITE})", content=render("nginx-galaxy.conf.j2", galaxy=galaxy),
                       dest=SITE)
    enabled = files.link(name="nginx site for Galaxy enabled", path=SITE_ENABLED, target=SITE)
    default = files.link(name="Debian's default nginx site disabled (it holds the HTTP port)", path=DEBIAN_DEFAULT_SITE,
                         present=False)
    changes = (site, enabled, default, key) if front.tls else (site, enabled, default)
    nginx_reloaded_if_valid(name="nginx -t, then reload (a site nginx refuses is rolled back)", site=SITE,
                            enabled=SITE_ENABLED, url=galaxy.url, _if=any_changed(*changes))
    systemd.service(name="nginx enabled and running", service="nginx", running=True, enabled=True)
