//! `shield-hook`: the OCI hook that hands a container to `shieldd` and fails closed.
//!
//! crun/runc run it at `createRuntime` (the container's network namespace exists, its process has
//! not started) and at `poststop`, with the OCI state JSON on stdin. The hook parses its
//! arguments ([`args`]), reads and validates the state ([`state`]), makes ONE call to the daemon
//! under one deadline ([`forward`]) and ends with an exit code and at most one stderr line
//! ([`report`]). Any failure at `createRuntime` exits non-zero, so the runtime does not start the
//! container unprotected.
//!
//! The hook never reads the environment: at `poststop` it holds only `PWD`.

pub mod args;
pub mod forward;
pub mod report;
pub mod state;

use std::ffi::OsString;
use std::io::Read;

use crate::args::Command;
use crate::report::Exit;

/// Runs the hook: `argv` without the program name, `stdin` with the OCI state.
pub fn run<I>(argv: I, stdin: impl Read) -> Exit
where
    I: IntoIterator<Item = OsString>,
{
    let args = match args::parse(argv) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => return Exit::help(),
        Err(error) => return Exit::usage(&error),
    };
    let state = match state::read(stdin, args.stage) {
        Ok(state) => state,
        Err(error) => return Exit::bad_state(&error),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return Exit::no_runtime(&error),
    };
    let result = runtime.block_on(forward::forward(&args, state.clone()));
    Exit::from_call(args.stage, &state, result)
}
