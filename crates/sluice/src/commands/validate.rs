//! `sluice validate`: every problem in a spec at once, as text or JSON; exit 0 when valid.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::plan::plan_file;

/// Arguments of `sluice validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The pipeline spec (YAML).
    pub pipeline: PathBuf,
    /// Print a JSON object `{valid, errors: [{path, message, location?, suggestion?}]}`.
    #[arg(long)]
    pub json: bool,
}

/// Runs `sluice validate`.
pub fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let diagnostics = match plan_file(&args.pipeline) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics,
    };
    if args.json {
        let report = serde_json::json!({ "valid": diagnostics.is_empty(), "errors": diagnostics });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if diagnostics.is_empty() {
        println!("{}: valid", args.pipeline.display());
    } else {
        for diagnostic in &diagnostics {
            println!("{}: {diagnostic}", args.pipeline.display());
        }
        println!("{} error{} found", diagnostics.len(), if diagnostics.len() == 1 { "" } else { "s" });
    }
    Ok(if diagnostics.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
