//! Writes the test images for scripts (quick start, benchmarks):
//! `testkit busybox FORMAT OUT [NAME]` with FORMAT oci | oci-archive | docker-archive.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(what), Some(format), Some(out)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("usage: testkit busybox oci|oci-archive|docker-archive OUT [NAME]");
        return ExitCode::from(2);
    };
    if what != "busybox" {
        eprintln!("testkit: unknown image {what:?}");
        return ExitCode::from(2);
    }
    let name = args.get(3).map(String::as_str);
    let image = testkit::busybox_image();
    let out = Path::new(out);
    match format.as_str() {
        "oci" => image.write_oci_layout(out, name),
        "oci-archive" => image.write_oci_archive(out, name),
        "docker-archive" => image.write_docker_archive(out, name),
        other => {
            eprintln!("testkit: unknown format {other:?}");
            return ExitCode::from(2);
        }
    }
    println!("{}", image.id());
    ExitCode::SUCCESS
}
