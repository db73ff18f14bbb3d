//! Issue 7, "Done when" 2–4: routing and the backend login, through the built `imapgate`
//! in front of real Dovecots.
//!
//! - Users spread over two Dovecots by rendezvous hashing; one stops and its users' new
//!   logins go to the other without a client error (its live sessions get
//!   `* BYE [UNAVAILABLE]`); it comes back, health marks it up, its users return.
//! - Removing one of three backends (SIGHUP) moves only the users it had.
//! - Dovecot logs the real client address (`rip=`) from the gateway's ID command, and
//!   separately from a PROXY v2 header alone.
//! - Master-user logins (AUTHENTICATE PLAIN with authzid, and `user*master` LOGIN): the
//!   client logs in with its own password and never sees the master user.
//!
//! Where a user landed is read from the admin API (`GET /api/sessions`, field `backend`)
//! and cross-checked with the backends' own logs (`Login: user=<…>`); the expected order
//! comes from the gateway's library router, which the unit tests pin down.

mod common;
#[path = "common/observability.rs"]
mod obs;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use common::{eventually, gateway_config, Client, Dovecot, DovecotBuilder, Gateway};
use obs::{config_with_admin, sample, scrape, sessions};

/// How long health changes and reloads may take (checks run every second).
const WAIT: Duration = Duration::from_secs(15);

/// The extra users for the routing tests, all with password `pw`.
fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user{i:02}")).collect()
}

fn with_users(mut b: DovecotBuilder, users: &[String]) -> DovecotBuilder {
    for u in users {
        b = b.user(u, "pw");
    }
    b
}

/// The order the gateway's router gives `user` over backends named `names` (equal
/// weights), best first.
fn rendezvous(names: &[&str], user: &str) -> Vec<String> {
    let mut config = String::from("[[listener]]\nname = \"imap\"\naddress = \"127.0.0.1:1\"\n");
    for (i, n) in names.iter().enumerate() {
        config.push_str(&format!(
            "[[backend]]\nname = \"{n}\"\naddress = \"127.0.0.1:{}\"\n",
            i + 1
        ));
    }
    config.push_str("[[passdb]]\ntype = \"passwd-file\"\npath = \"users\"\n");
    let config = imapgate::config::Config::parse(&config, PathBuf::from(".")).expect("config");
    imapgate::route::Router::from_config(&config)
        .candidates(&imapgate::auth::UserInfo {
            user: user.into(),
            ..Default::default()
        })
        .iter()
        .map(|b| b.name.clone())
        .collect()
}

/// Log every user in through the gateway (a few at a time), then read where the admin API
/// says each one landed.  Returns the open sessions too (dropping them closes them).
fn land(port: u16, admin: u16, users: &[String]) -> (BTreeMap<String, String>, Vec<Client>) {
    let clients: Vec<Client> = thread::scope(|s| {
        let handles: Vec<_> = users
            .chunks(users.len().div_ceil(8).max(1))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|u| {
                            let mut c = Client::connect(port);
                            c.greeting();
                            c.send(&format!("l LOGIN {u} pw\r\n"));
                            let (lines, tagged) = c.expect_tagged("l");
                            assert!(
                                tagged.starts_with("l OK"),
                                "{u}: login through the gateway: {tagged} after {lines:?}"
                            );
                            c
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("login thread"))
            .collect()
    });
    // Only these sessions: earlier ones may not have left the list yet.
    let ours: Vec<u64> = clients
        .iter()
        .map(|c| u64::from(c.writer().local_addr().expect("local address").port()))
        .collect();
    let mut map = BTreeMap::new();
    for s in sessions(admin) {
        let mine = s["client_port"].as_u64().is_some_and(|p| ours.contains(&p));
        if let (true, Some(u), Some(b)) = (mine, s["user"].as_str(), s["backend"].as_str()) {
            map.insert(u.to_string(), b.to_string());
        }
    }
    assert_eq!(map.len(), users.len(), "every user has a session: {map:?}");
    (map, clients)
}

/// Close sessions politely (LOGOUT), so Dovecot has no stragglers.
fn log_out(clients: Vec<Client>) {
    for mut c in clients {
        c.send("z LOGOUT\r\n");
        c.expect_bye();
        c.expect_ok("z");
    }
}

/// Wait until `backend`'s `imapgate_backend_up` is `want` (1 up, 0 down).
fn wait_up(admin: u16, backend: &str, want: f64) {
    assert!(
        eventually(WAIT, || sample(
            &scrape(admin),
            "imapgate_backend_up",
            &[("backend", backend)]
        ) == want),
        "imapgate_backend_up{{backend={backend:?}}} never became {want}:\n{}",
        scrape(admin)
    );
}

/// Whether Dovecot's log shows a login for `user` (`Login: user=<user>,`).
fn logged_in_at(dovecot: &Dovecot, user: &str) -> bool {
    dovecot.log().contains(&format!("Login: user=<{user}>,"))
}

// ---------------------------------------------------------------------------------------
// Done when 2

#[test]
fn users_spread_fail_over_and_return() {
    let users = users(40);
    let a = with_users(Dovecot::builder(), &users).start();
    let b = with_users(Dovecot::builder(), &users).start();
    let b_port = b.port();
    let [listen, admin] = obs::ports();
    // Both sandboxes were given the same users; the gateway checks passwords with one file.
    let config = config_with_admin(
        listen,
        &[("a", a.port()), ("b", b_port)],
        &a.users_file(),
        admin,
    );
    let gw = Gateway::start(&config);

    // Spread: each user where the router ranks it first, and both backends get users.
    let (home, clients) = land(gw.port(), admin, &users);
    for (u, backend) in &home {
        assert_eq!(backend, &rendezvous(&["a", "b"], u)[0], "{u}");
    }
    let on_b: Vec<String> = home
        .iter()
        .filter(|(_, b)| *b == "b")
        .map(|(u, _)| u.clone())
        .collect();
    let on_a = users.len() - on_b.len();
    assert!(
        on_a >= 8 && on_b.len() >= 8,
        "40 users spread {on_a}/{} over two backends",
        on_b.len()
    );
    // The backends saw exactly the logins the gateway reports.
    assert!(
        eventually(WAIT, || home.iter().all(|(u, backend)| {
            let (here, there) = if backend == "a" { (&a, &b) } else { (&b, &a) };
            logged_in_at(here, u) && !logged_in_at(there, u)
        })),
        "Dovecot logs disagree with {home:?}"
    );

    // A backend process dies mid-session (SIGKILL: no BYE from Dovecot): the gateway says
    // `* BYE [UNAVAILABLE]` itself and closes.  `land` returns sessions in `users` order.
    let mut clients: Vec<Option<Client>> = clients.into_iter().map(Some).collect();
    let session_of = |clients: &mut Vec<Option<Client>>, user: &str| {
        let i = users.iter().position(|u| u == user).expect("a user");
        let mut c = clients[i].take().expect("a session");
        c.set_timeout(WAIT);
        c
    };
    let mut lost = session_of(&mut clients, &on_b[0]);
    let line = login_line(&b, &on_b[0]);
    let mpid = line
        .split("mpid=")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("no mpid in {line}"));
    let killed = std::process::Command::new("kill")
        .args(["-KILL", mpid])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -KILL {mpid}");
    let bye = lost.expect_bye();
    assert!(bye.starts_with("* BYE [UNAVAILABLE]"), "{bye}");
    lost.expect_eof();

    // Stop b (SIGTERM): Dovecot's own BYE reaches b's other clients.
    let mut stopped = session_of(&mut clients, &on_b[1]);
    drop(b);
    let bye = stopped.expect_bye();
    assert!(bye.starts_with("* BYE"), "{bye}");
    stopped.expect_eof();

    // At once, before or after the health check notices: every user logs in without an
    // error, b's users on a (a refused connect is retried on the next backend).
    let (moved, moved_clients) = land(gw.port(), admin, &users);
    assert!(moved.values().all(|b| b == "a"), "{moved:?}");
    log_out(moved_clients);
    drop(clients);
    wait_up(admin, "b", 0.0);
    assert!(
        eventually(WAIT, || on_b.iter().all(|u| logged_in_at(&a, u))),
        "b's users never reached a"
    );

    // b comes back on its port (fresh maildirs): health marks it up and its users return.
    let b = with_users(Dovecot::builder().port(b_port), &users).start();
    wait_up(admin, "b", 1.0);
    assert!(
        gw.log()
            .lines()
            .any(|l| l.contains("backend up") && l.contains("backend=\"b\"")),
        "no health line for b coming back:\n{}",
        gw.log()
    );
    let (back, clients) = land(gw.port(), admin, &users);
    assert_eq!(back, home, "users return to their own backend");
    log_out(clients);
    assert!(
        eventually(WAIT, || on_b.iter().all(|u| logged_in_at(&b, u))),
        "b's users never reached b again"
    );
    let text = scrape(admin);
    assert!(
        sample(
            &text,
            "imapgate_sessions_closed_total",
            &[("reason", "backend_lost")]
        ) >= 1.0,
        "{text}"
    );
}

#[test]
fn removing_a_backend_moves_only_its_users() {
    let users = users(50);
    let dovecots: Vec<Dovecot> = (0..3)
        .map(|_| with_users(Dovecot::builder(), &users).start())
        .collect();
    let names = ["a", "b", "c"];
    let [listen, admin] = obs::ports();
    let backends: Vec<(&str, u16)> = names
        .iter()
        .zip(&dovecots)
        .map(|(n, d)| (*n, d.port()))
        .collect();
    let config = config_with_admin(listen, &backends, &dovecots[0].users_file(), admin);
    let gw = Gateway::start(&config);

    let (before, clients) = land(gw.port(), admin, &users);
    log_out(clients);
    for (u, backend) in &before {
        assert_eq!(backend, &rendezvous(&names, u)[0], "{u}");
    }
    for n in names {
        let count = before.values().filter(|b| *b == n).count();
        assert!(
            count >= 5,
            "50 users over three backends: {n} has {count}: {before:?}"
        );
    }

    // Drop c from the config and reload.
    let without_c = config_with_admin(listen, &backends[..2], &dovecots[0].users_file(), admin);
    std::fs::write(gw.config_path(), without_c).expect("rewrite config");
    gw.signal("HUP");
    assert!(
        eventually(WAIT, || sample(
            &scrape(admin),
            "imapgate_config_reloads_total",
            &[("result", "ok")]
        ) == 1.0),
        "reload: {}",
        gw.log()
    );
    let (after, clients) = land(gw.port(), admin, &users);
    log_out(clients);

    let mut moved = 0;
    for u in &users {
        let (was, is) = (&before[u], &after[u]);
        if was == "c" {
            // Its next choice among the rest: what the router ranked second with c there.
            let order = rendezvous(&names, u);
            assert_eq!(is, &order[1], "{u} had c; order {order:?}");
            moved += 1;
        } else {
            assert_eq!(is, was, "{u} was on {was}, not on the removed backend");
        }
    }
    assert_eq!(moved, before.values().filter(|b| *b == "c").count());
    let text = scrape(admin);
    assert!(
        !text.contains("imapgate_backend_up{backend=\"c\"}"),
        "the removed backend's series is gone:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------
// Done when 3

/// A client at 127.0.0.2 logs in as `user` through the gateway and logs out.
fn log_in_from_127_0_0_2(port: u16, user: &str, password: &str) {
    let mut c = Client::connect_from(Ipv4Addr::new(127, 0, 0, 2), port);
    c.greeting();
    c.send(&format!("l LOGIN {user} {password}\r\n"));
    c.expect_ok("l");
    c.send("z LOGOUT\r\n");
    c.expect_bye();
    c.expect_ok("z");
}

/// Dovecot's `Login:` line for `user`, once it is there.
fn login_line(dovecot: &Dovecot, user: &str) -> String {
    let needle = format!("Login: user=<{user}>,");
    let mut line = String::new();
    assert!(
        eventually(WAIT, || {
            line = dovecot
                .log()
                .lines()
                .find(|l| l.contains(&needle))
                .unwrap_or_default()
                .to_string();
            !line.is_empty()
        }),
        "no login for {user}:\n{}",
        dovecot.log()
    );
    line
}

/// Rewrite the gateway's only backend table's keys and reload.
fn reload_backend(gw: &Gateway, config: &str, backend: &str, reloads: f64, admin: u16) {
    let start = config.find("[[backend]]").expect("a backend table");
    let end = config[start + 1..]
        .find("\n[")
        .map_or(config.len(), |i| start + 1 + i);
    let new = format!("{}{backend}\n{}", &config[..start], &config[end..]);
    std::fs::write(gw.config_path(), new).expect("rewrite config");
    gw.signal("HUP");
    assert!(
        eventually(WAIT, || sample(
            &scrape(admin),
            "imapgate_config_reloads_total",
            &[("result", "ok")]
        ) == reloads),
        "reload {reloads}: {}",
        gw.log()
    );
}

#[test]
fn dovecot_logs_the_real_client_ip_via_id_and_via_proxy_v2() {
    let dovecot = Dovecot::builder()
        .user("carol", "pw")
        .user("dave", "pw")
        .haproxy()
        .start();
    let [listen, admin] = obs::ports();
    let config = config_with_admin(
        listen,
        &[("dovecot", dovecot.port())],
        &dovecot.users_file(),
        admin,
    );
    let gw = Gateway::start(&config);

    // ID forwarding (the default): x-originating-ip, trusted via login_trusted_networks.
    log_in_from_127_0_0_2(gw.port(), "alice", "wonderland");
    let line = login_line(&dovecot, "alice");
    assert!(line.contains("rip=127.0.0.2,"), "{line}");
    // x-session-ext-id came along too: Dovecot names the session after the gateway's.
    assert!(line.contains("session=<imapgate-"), "{line}");

    // Control: neither ID nor PROXY, and Dovecot sees only the gateway.
    let port = dovecot.port();
    reload_backend(
        &gw,
        &config,
        &format!(
            "[[backend]]\nname = \"dovecot\"\naddress = \"127.0.0.1:{port}\"\nforward_client_id = false"
        ),
        1.0,
        admin,
    );
    log_in_from_127_0_0_2(gw.port(), "bob", "builder");
    let line = login_line(&dovecot, "bob");
    assert!(line.contains("rip=127.0.0.1,"), "{line}");

    // PROXY v2 alone, to Dovecot's `haproxy = yes` listener.
    let port = dovecot.haproxy_port();
    reload_backend(
        &gw,
        &config,
        &format!(
            "[[backend]]\nname = \"dovecot\"\naddress = \"127.0.0.1:{port}\"\n\
             forward_client_id = false\nsend_proxy_protocol = true"
        ),
        2.0,
        admin,
    );
    log_in_from_127_0_0_2(gw.port(), "carol", "pw");
    let line = login_line(&dovecot, "carol");
    assert!(line.contains("rip=127.0.0.2,"), "{line}");
    // A client from 127.0.0.1 is told apart: the header carries each client's address.
    let mut c = Client::connect(gw.port());
    c.greeting();
    c.send("l LOGIN dave pw\r\nz LOGOUT\r\n");
    c.expect_ok("l");
    c.expect_bye();
    c.expect_ok("z");
    let line = login_line(&dovecot, "dave");
    assert!(line.contains("rip=127.0.0.1,"), "{line}");

    // The active health checks (a PROXY LOCAL header, then the greeting) keep it up.
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sample(
            &scrape(admin),
            "imapgate_backend_up",
            &[("backend", "dovecot")]
        ),
        1.0,
        "{}",
        gw.log()
    );
    assert!(!gw.log().contains("backend down"), "{}", gw.log());
}

/// The backend's ID carries `x-proxy-ttl` (one less than ours) and, with
/// `forward_client_id_fields`, the client's own ID fields but never its `x-*` ones, which
/// would let a client choose the address Dovecot logs.  Read from Dovecot's `ID sent:` log
/// line (the sandbox sets `imap_id_log = *`).
#[test]
fn the_client_id_fields_and_the_proxy_ttl_reach_dovecot() {
    let dovecot = Dovecot::start();
    let base = gateway_config(common::free_port(), dovecot.port(), &dovecot.users_file());
    let id_line = |user: &str| {
        login_line(&dovecot, user);
        // imap-login logs the ID just before the login it came with.
        let log = dovecot.log();
        let mut id = None;
        for l in log.lines() {
            if l.contains("ID sent:") {
                id = Some(l);
            } else if l.contains(&format!("Login: user=<{user}>,")) {
                break;
            }
        }
        id.unwrap_or_else(|| panic!("no ID line for {user}:\n{log}"))
            .to_string()
    };
    let client_id = "(\"name\" \"testmail\" \"version\" \"2.1\" \"x-originating-ip\" \"192.0.2.66\" \"X-Proxy-TTL\" \"9\")";
    for (user, password, forward) in [("alice", "wonderland", true), ("bob", "builder", false)] {
        let config = base.replacen(
            "name = \"dovecot\"",
            &format!("name = \"dovecot\"\nforward_client_id_fields = {forward}"),
            1,
        );
        let gw = Gateway::start(&config);
        let mut c = Client::connect(gw.port());
        c.greeting();
        c.send(&format!("i ID {client_id}\r\n"));
        c.expect_ok("i");
        c.send(&format!("l LOGIN {user} {password}\r\n"));
        c.expect_ok("l");
        c.send("z LOGOUT\r\n");
        c.expect_bye();

        let line = id_line(user);
        // Ours: the real address, and one hop less than the default 5 (the client's 9 is
        // higher, so ours stands).
        assert!(line.contains("x-originating-ip=127.0.0.1"), "{line}");
        assert!(line.contains("x-proxy-ttl=4"), "{line}");
        assert!(!line.contains("192.0.2.66"), "{line}");
        assert!(!line.to_ascii_lowercase().contains("ttl=9"), "{line}");
        assert_eq!(line.contains("name=testmail"), forward, "{line}");
        assert_eq!(line.contains("version=2.1"), forward, "{line}");
        assert!(login_line(&dovecot, user).contains("rip=127.0.0.1,"));
    }
}

/// Loop guard: a gateway whose backend is itself.  Each pass lowers `x-proxy-ttl` by one;
/// the session that arrives with 0 is refused, and the client gets `NO [UNAVAILABLE]`
/// instead of a chain of connections without end.
#[test]
fn a_proxy_loop_is_refused() {
    let dovecot = Dovecot::start();
    let listen = common::free_port();
    // The backend address is the gateway's own listener.
    let config = gateway_config(listen, listen, &dovecot.users_file());
    let gw = Gateway::start(&config);
    let mut c = Client::connect(gw.port());
    c.greeting();
    c.send("l LOGIN alice wonderland\r\n");
    let no = c.expect_no("l");
    assert!(no.starts_with("l NO [UNAVAILABLE]"), "{no}");
    assert!(no.contains("Proxy loop"), "{no}");
    let log = gw.log();
    // Five hops (ttl 5 → 0), then the refusal, once.
    assert_eq!(
        log.matches("proxying appears to be looping").count(),
        1,
        "{log}"
    );
    // The gateway still serves: the refused chain left nothing behind.
    c.send("c CAPABILITY\r\n");
    c.expect_ok("c");
}

// ---------------------------------------------------------------------------------------
// Done when 4

const MASTER: &str = "gatemaster";
const MASTER_PASSWORD: &str = "m4ster-s3cret";

/// Put one message ("Subject: hi alice") in alice's INBOX, straight at Dovecot; bob's stays
/// empty, so the mailbox a session shows says whose session it is.
fn seed_alice_inbox(dovecot: &Dovecot) {
    let mut d = Client::connect(dovecot.port());
    d.greeting();
    d.send("l LOGIN alice wonderland\r\n");
    d.expect_ok("l");
    d.send("a APPEND INBOX {25+}\r\nSubject: hi alice\r\n\r\nhi\r\n\r\n");
    d.expect_ok("a");
}

#[test]
fn master_user_login_is_invisible_to_the_client() {
    let dovecot = Dovecot::builder()
        .master_user(MASTER, MASTER_PASSWORD)
        .start();
    seed_alice_inbox(&dovecot);
    let base = gateway_config(common::free_port(), dovecot.port(), &dovecot.users_file());
    for method in ["authzid", "separator"] {
        let config = base.replacen(
            "name = \"dovecot\"",
            &format!(
                "name = \"dovecot\"\nlogin = \"master\"\nmaster_user = \"{MASTER}\"\n\
                 master_password = \"{MASTER_PASSWORD}\"\nmaster_method = \"{method}\""
            ),
            1,
        );
        let gw = Gateway::start(&config);
        let count = |what: &str| dovecot.log().matches(what).count();
        let masters_before = count("Master user logging in as alice");
        let logins_before = count("Login: user=<alice>,");

        // Everything the client reads, from the greeting to the end.
        let mut seen = Vec::new();
        let mut c = Client::connect(gw.port());
        seen.push(c.greeting());
        c.send("c CAPABILITY\r\n");
        seen.extend(c.expect_ok("c"));
        // A wrong password fails at the edge, although the master login would succeed.
        c.send("w LOGIN alice not-her-password\r\n");
        let no = c.expect_no("w");
        assert!(
            no.starts_with("w NO [AUTHENTICATIONFAILED]"),
            "{method}: {no}"
        );
        seen.push(no);
        c.send("l LOGIN alice wonderland\r\n");
        seen.extend(c.expect_ok("l"));
        for (tag, cmd) in [
            ("k", "CAPABILITY"),
            ("i", "ID NIL"),
            ("n", "NAMESPACE"),
            ("s", "SELECT INBOX"),
            ("f", "FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)])"),
        ] {
            c.send(&format!("{tag} {cmd}\r\n"));
            seen.extend(c.expect_ok(tag));
        }
        c.send("z LOGOUT\r\n");
        seen.push(c.expect_bye());
        seen.extend(c.expect_ok("z"));

        let all = seen.join("\n");
        assert!(all.contains("* 1 EXISTS"), "{method}: alice's INBOX: {all}");
        assert!(all.contains("hi alice"), "{method}: {all}");
        let lower = all.to_ascii_lowercase();
        for secret in [MASTER, MASTER_PASSWORD, "*gatemaster", "master user"] {
            assert!(
                !lower.contains(&secret.to_ascii_lowercase()),
                "{method}: the client saw {secret:?}:\n{all}"
            );
        }

        // Dovecot: the master logged in as alice, once (the refused password never got
        // there), and the session is alice's.
        assert!(
            eventually(WAIT, || count("Master user logging in as alice")
                == masters_before + 1
                && count("Login: user=<alice>,") == logins_before + 1),
            "{method}: {}",
            dovecot.log()
        );
        assert!(
            !gw.log().contains(MASTER_PASSWORD),
            "{method}: the master password is in the gateway log"
        );
    }
}

/// Issue 6: a master user at the edge (`auth.master_users`).  `support` logs in with its
/// own password and PLAIN's authorization identity `alice`: the session is alice's, and
/// the gateway reaches Dovecot with its master login for alice.  The same request from a
/// user who is not a master gets `NO [AUTHORIZATIONFAILED]`, and a master with a wrong
/// password `NO [AUTHENTICATIONFAILED]`; neither reaches Dovecot.
#[test]
fn a_master_user_at_the_edge_acts_for_another_user() {
    let dovecot = Dovecot::builder()
        .master_user(MASTER, MASTER_PASSWORD)
        .user("support", "helpdesk")
        .start();
    seed_alice_inbox(&dovecot);
    let config =
        gateway_config(common::free_port(), dovecot.port(), &dovecot.users_file()).replacen(
            "name = \"dovecot\"",
            &format!(
                "name = \"dovecot\"\nmaster_user = \"{MASTER}\"\n\
                 master_password = \"{MASTER_PASSWORD}\""
            ),
            1,
        ) + "\n[auth]\nmaster_users = [\"support\"]\n";
    let gw = Gateway::start(&config);
    let plain = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    let count = |what: &str| dovecot.log().matches(what).count();
    let masters_before = count("Master user logging in as alice");

    let mut c = Client::connect(gw.port());
    c.greeting();
    // bob is no master: refused although his password is right.
    c.send(&format!(
        "b AUTHENTICATE PLAIN {}\r\n",
        plain("alice\0bob\0builder")
    ));
    let no = c.expect_no("b");
    assert!(no.starts_with("b NO [AUTHORIZATIONFAILED]"), "{no}");
    // The master with a wrong password.
    c.send(&format!(
        "w AUTHENTICATE PLAIN {}\r\n",
        plain("alice\0support\0wrong")
    ));
    let no = c.expect_no("w");
    assert!(no.starts_with("w NO [AUTHENTICATIONFAILED]"), "{no}");
    // The master with its password: alice's session.
    c.send(&format!(
        "m AUTHENTICATE PLAIN {}\r\n",
        plain("alice\0support\0helpdesk")
    ));
    c.expect_ok("m");
    c.send("s SELECT INBOX\r\n");
    let selected = c.expect_ok("s").join("\n");
    assert!(selected.contains("* 1 EXISTS"), "alice's INBOX: {selected}");
    c.send("f FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)])\r\n");
    let fetched = c.expect_ok("f").join("\n");
    assert!(fetched.contains("hi alice"), "{fetched}");
    c.send("z LOGOUT\r\n");
    c.expect_bye();

    assert!(
        eventually(WAIT, || count("Master user logging in as alice")
            == masters_before + 1),
        "{}",
        dovecot.log()
    );
    // The audit lines name both users, and the refusal's reason.
    let log = gw.log();
    assert!(
        log.lines().any(|l| l.contains("user=\"support\"")
            && l.contains("authz_user=Some(\"alice\")")
            && l.contains("result=\"ok\"")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("user=\"bob\"") && l.contains("result=\"authz_denied\"")),
        "{log}"
    );
    for secret in ["helpdesk", "builder", MASTER_PASSWORD] {
        assert!(!log.contains(secret), "{secret:?} in the gateway log");
    }
}

/// `max_connections` on a backend: once it relays that many sessions it is
/// skipped like a down one; with no other backend the login gets
/// `NO [UNAVAILABLE]`, and a slot freed by a LOGOUT is usable again.
#[test]
fn a_full_backend_is_skipped() {
    let dovecot = Dovecot::start();
    let config = gateway_config(common::free_port(), dovecot.port(), &dovecot.users_file())
        .replacen(
            "name = \"dovecot\"",
            "name = \"dovecot\"\nmax_connections = 1",
            1,
        );
    let gw = Gateway::start(&config);
    let port = gw.ports()[0];

    let mut first = Client::connect(port);
    first.greeting();
    first.send("a LOGIN alice wonderland\r\n");
    first.expect_ok("a");

    let mut second = Client::connect(port);
    second.greeting();
    second.send("b LOGIN bob builder\r\n");
    let no = second.expect_no("b");
    assert!(no.contains("[UNAVAILABLE]"), "{no}");

    first.send("z LOGOUT\r\n");
    first.expect_ok("z");
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut c = Client::connect(port);
            c.greeting();
            c.send("c LOGIN bob builder\r\n");
            let (_, tagged) = c.expect_tagged("c");
            tagged.starts_with("c OK")
        }),
        "the freed slot was not reused"
    );
    assert!(
        gw.log().contains("backend at its connection cap"),
        "{}",
        gw.log()
    );
}
