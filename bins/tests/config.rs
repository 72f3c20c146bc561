//! Configuration files, end to end: `mdproxy check-config`, the roles run from one TOML file
//! (`mdproxy --config FILE <role>`, flags overriding it), and the agent as a drop-in for
//! neutron-metadata-agent, reading Neutron's INI files through its program name.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::*;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

runtime_tests! {
    one_toml_file_configures_the_agent_and_the_ns_proxy,
    neutron_metadata_agent_reads_the_ini_files,
    ini_keystone_settings_select_the_neutron_backend,
}

const PROJECT: &str = "8f14e45fceea167a5a36dedd4bea2543";
const INSTANCE: &str = "6a0e1a52-3c1b-4a8e-9d7f-0a1b2c3d4e5f";
const SECRET: &str = "s3cr3t-from-the-ini";
const PASSWORD: &str = "keystone-pw-from-the-ini";

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mdproxy.example.toml")
}

#[test]
fn check_config_accepts_the_example() {
    let example = example();
    let (status, out, err) = run_binary(&["check-config", example.to_str().unwrap()]);
    assert!(status.success(), "{out}{err}");
    for table in ["[ns-proxy]", "[agent]", "[server]"] {
        assert!(out.contains(table), "{out}");
    }
    assert!(
        out.contains("Not checked: that the files named exist"),
        "{out}"
    );
}

#[test]
fn check_config_names_the_line_of_the_first_error() {
    let dir = TempDir::new();
    let example = fs::read_to_string(example()).unwrap();
    // (a change to the example, the line it is on, the message)
    let cases = [
        (
            "listen = [\"0.0.0.0:9697\"]",
            "lisen = [\"0.0.0.0:9697\"]",
            "unknown key `lisen` in [ns-proxy]",
        ),
        (
            "metadata-url = \"http://127.0.0.1:8775\"",
            "metadata-url = \"http//127.0.0.1:8775\"",
            "`metadata-url`: \"http//127.0.0.1:8775\" is not http[s]://HOST[:PORT]",
        ),
        (
            "max-conns = 1024",
            "max-conns = 1024\nrouter-id = \"5b3d8a7e-1f2c-4d6e-9a0b\"",
            "`router-id`: \"5b3d8a7e-1f2c-4d6e-9a0b\" is not a UUID",
        ),
        (
            "imdsv2 = \"optional\"",
            "imdsv2 = \"sometimes\"",
            "`imdsv2`: \"sometimes\"",
        ),
        (
            "workers = 1",
            "workers = \"one\"",
            "`workers`: \"one\" is not a valid number",
        ),
    ];
    for (i, (from, to, want)) in cases.into_iter().enumerate() {
        assert_eq!(example.matches(from).count(), 1, "{from}");
        let text = example.replacen(from, to, 1);
        let line = text
            .lines()
            .position(|l| l == to.lines().last().unwrap())
            .unwrap()
            + 1;
        let path = dir.join(&format!("bad{i}.toml"));
        fs::write(&path, &text).unwrap();
        let (status, out, err) = run_binary(&["check-config", path.to_str().unwrap()]);
        assert_eq!(status.code(), Some(2), "{to}: {out}{err}");
        let want = format!("{}:{line}: {want}", path.display());
        assert!(err.starts_with(&want), "wanted {want:?}, got {err:?}");
    }
    let (status, _, err) = run_binary(&["check-config", "/nonexistent.toml"]);
    assert_eq!(status.code(), Some(2));
    assert!(err.starts_with("cannot read /nonexistent.toml"), "{err}");
}

/// A static map: [`ROUTER`] has [`NETWORK`], where 127.0.0.1 is [`INSTANCE`].
fn static_map(dir: &TempDir) -> PathBuf {
    let path = dir.join("map.toml");
    let text = format!(
        "[[router]]\nid = \"{ROUTER}\"\nnetworks = [\"{NETWORK}\"]\n\n[[port]]\n\
         network = \"{NETWORK}\"\nip = \"127.0.0.1\"\ndevice_id = \"{INSTANCE}\"\n\
         project_id = \"{PROJECT}\"\n"
    );
    fs::write(&path, text).unwrap();
    path
}

/// A metadata server that records what it is sent and answers with the instance ID.
fn metadata_server() -> Upstream {
    Upstream::start_tcp(|req| {
        let id = req.header_values("x-instance-id").join(",");
        Reply::Send(ok_response(id.as_bytes()))
    })
}

/// Asserts that an instance's request, through `proxy`, reached `server` as [`INSTANCE`],
/// signed with `secret`.
fn assert_signed_request(proxy: &Proxy, server: &Upstream, secret: &str) {
    let resp = request(proxy.addr, &get("/latest/meta-data/instance-id"));
    assert_eq!(
        (resp.status, resp.body_text()),
        (200, INSTANCE.to_owned()),
        "{resp:?}"
    );
    let seen = &server.wait_for(1)[0];
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(INSTANCE.as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for (name, want) in [
        ("X-Instance-ID", INSTANCE),
        ("X-Tenant-ID", PROJECT),
        ("X-Forwarded-For", "127.0.0.1"),
        ("X-Instance-ID-Signature", &signature),
    ] {
        assert_eq!(seen.header_values(name), [want], "{name}:\n{}", seen.head);
    }
}

fn mdproxy() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mdproxy"))
}

fn one_toml_file_configures_the_agent_and_the_ns_proxy(rt: Runtime) {
    let server = metadata_server();
    let dir = TempDir::new();
    let (socket, secret) = (dir.join("agent.sock"), dir.join("secret"));
    fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let config = dir.join("mdproxy.toml");
    let text = format!(
        "drain-timeout = 1\n\
         [ns-proxy]\nupstream-socket = {socket:?}\n\
         # replaced by --listen on the command line\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n\
         [agent]\nlisten-socket = {socket:?}\nshared-secret-file = {secret:?}\n\
         static-map = {map:?}\nmetadata-url = {url:?}\nworkers = 2\n",
        map = static_map(&dir),
        url = server.url(),
    );
    fs::write(&config, text).unwrap();
    let config = config.to_str().unwrap().to_owned();
    let args = ["--config".to_owned(), config.clone(), "agent".to_owned()];
    let agent = Agent::start_program(rt, mdproxy(), &args, &socket);
    let proxy = Proxy::start_with(rt, |port| {
        let own = ["ns-proxy", "--router-id", ROUTER, "--listen"];
        let mut args = vec!["--config".to_owned(), config.clone()];
        args.extend(own.map(String::from));
        args.push(format!("127.0.0.1:{port}"));
        args
    });
    assert_signed_request(&proxy, &server, SECRET);
    agent.wait_for_log("2 worker(s)");
}

/// `neutron-metadata-agent`: a symlink to the binary in `dir`.
fn legacy_agent(dir: &TempDir) -> PathBuf {
    let link = dir.join("neutron-metadata-agent");
    symlink(mdproxy(), &link).unwrap();
    link
}

fn neutron_metadata_agent_reads_the_ini_files(rt: Runtime) {
    let server = metadata_server();
    let dir = TempDir::new();
    let state = TempDir::new();
    let socket = state.join("metadata_proxy");
    let port = server.url().rsplit(':').next().unwrap().to_owned();
    // Read first, so overridden by metadata_agent.ini: as neutron.conf on the agent's
    // command line.
    let neutron_conf = dir.join("neutron.conf");
    fs::write(
        &neutron_conf,
        "[DEFAULT]\ncore_plugin = ml2\nmetadata_proxy_shared_secret = not-this-one\n\
         [database]\nconnection = mysql+pymysql://neutron:dbpass@controller/neutron\n",
    )
    .unwrap();
    let ini = dir.join("metadata_agent.ini");
    let text = format!(
        "[DEFAULT]\n\
         # Neutron's own comments; `;` too\n\
         ; state_path is where the socket goes, through $state_path\n\
         state_path = {state}\n\
         metadata_proxy_socket = $state_path/metadata_proxy\n\
         nova_metadata_host = 127.0.0.1\n\
         nova_metadata_port = {port}\n\
         nova_metadata_protocol = http\n\
         metadata_proxy_shared_secret = {SECRET}\n\
         metadata_workers = 2\n\
         metadata_backlog = 64\n\
         metadata_proxy_socket_mode = all\n\
         debug = True\n\
         [cache]\n\
         enabled = true\n",
        state = socket.parent().unwrap().display(),
    );
    fs::write(&ini, text).unwrap();
    let args = [
        "--config-file",
        neutron_conf.to_str().unwrap(),
        "--config-file",
        ini.to_str().unwrap(),
        "--static-map",
        static_map(&dir).to_str().unwrap(),
    ]
    .map(String::from);
    let agent = Agent::start_program(rt, &legacy_agent(&dir), &args, &socket);
    let proxy = Proxy::start(rt, &socket, &[]);
    assert_signed_request(&proxy, &server, SECRET);
    let log = agent.wait_for_log("2 worker(s)");
    // The unknown keys, listed in one startup line, and no secret anywhere.
    assert!(log.contains("ignoring [DEFAULT] core_plugin"), "{log}");
    assert!(log.contains("ignoring [database] connection"), "{log}");
    assert!(log.contains("ignoring [cache] enabled"), "{log}");
    for secret in [SECRET, "not-this-one", "dbpass"] {
        assert!(!log.contains(secret), "{secret} was logged:\n{log}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "metadata_proxy_socket_mode = all");
}

fn ini_keystone_settings_select_the_neutron_backend(rt: Runtime) {
    let server = metadata_server();
    let os = FakeOpenStack::start(
        Some(PASSWORD),
        &[(ROUTER, &[NETWORK])],
        &[FakePort::new(NETWORK, "127.0.0.1", INSTANCE, PROJECT)],
    );
    let dir = TempDir::new();
    let socket = dir.join("mp.sock");
    let ini = dir.join("metadata_agent.ini");
    let text = format!(
        "[DEFAULT]\nmetadata_proxy_socket = {socket}\nnova_metadata_host = 127.0.0.1\n\
         nova_metadata_port = {port}\nmetadata_proxy_shared_secret = {SECRET}\n\
         [keystone_authtoken]\nauth_url = {auth}\nauth_type = password\n\
         username = mdproxy\npassword = {PASSWORD}\nproject_name = service\n\
         user_domain_name = Default\nproject_domain_name = Default\nregion_name = RegionOne\n",
        socket = socket.display(),
        port = server.url().rsplit(':').next().unwrap(),
        auth = os.auth_url(),
    );
    fs::write(&ini, text).unwrap();
    let args = ["agent", "--config-file", ini.to_str().unwrap(), "--debug"].map(String::from);
    let agent = Agent::start_program(rt, mdproxy(), &args, &socket);
    let proxy = Proxy::start(rt, &socket, &[]);
    assert_signed_request(&proxy, &server, SECRET);
    assert_eq!(os.keystone.count(), 1);
    let log = agent.wait_for_log("neutron backend");
    for secret in [SECRET, PASSWORD] {
        assert!(!log.contains(secret), "{secret} was logged:\n{log}");
    }
}

#[test]
fn an_ini_without_keystone_asks_for_a_static_map() {
    let dir = TempDir::new();
    let ini = dir.join("metadata_agent.ini");
    fs::write(&ini, "[DEFAULT]\nmetadata_proxy_shared_secret = x\n").unwrap();
    let (status, _, err) = run_binary(&["agent", "--config-file", ini.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("no Keystone auth_url") && err.contains("--static-map"),
        "{err}"
    );
    fs::write(&ini, "[DEFAULT]\n\nnova_metadata_port = eighty\n").unwrap();
    let (status, _, err) = run_binary(&[
        "agent",
        "--config-file",
        ini.to_str().unwrap(),
        "--static-map=/m",
    ]);
    assert_eq!(status.code(), Some(2), "{err}");
    let want = format!("{}:3: nova_metadata_port: ", ini.display());
    assert!(err.contains(&want), "{err}");
}
