/// What this binary is: the release version and the commit it was built from.
///
/// The version is defined here and nowhere else in the sources: `--version`, the ready line and metrics
/// read it from this enum. CHANGELOG.md's newest release heading names the same version
/// (`test_cli.py` checks it).
public enum BuildInfo {
    /// The release version, semantic versioning.
    public static let version = "0.1.0"

    /// The short git commit the binary was built from (`git rev-parse --short HEAD`), or `unknown` when the
    /// build had no git checkout and no `SLUICE_COMMIT` (see `Plugins/BuildInfoPlugin`). Always hexadecimal
    /// or `unknown`, so it is safe in a metric label or a JSON string as is.
    public static let commit = buildCommit

    /// `sluice 0.1.0 (commit abc1234)`: what `--version` prints.
    public static var versionLine: String { "sluice \(version) (commit \(commit))" }
}
