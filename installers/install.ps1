<#
.SYNOPSIS
Install (or upgrade in place) compass-bridge for the current user on Windows, then register it with the
browsers and Claude Code (`compass-bridge install`).

.DESCRIPTION
The package goes into an isolated environment: `uv tool` or `pipx` when one is on PATH, else a virtualenv in
%LOCALAPPDATA%\compass-bridge\venv. Arguments after `--` go to `compass-bridge install` (for example
`-- --browser edge --client cursor`). Running the script again upgrades in place. See docs/INSTALL.md.

.EXAMPLE
powershell -ExecutionPolicy Bypass -File install.ps1
.EXAMPLE
powershell -ExecutionPolicy Bypass -File install.ps1 -From C:\src\compass-bridge -Method venv -- --client cursor
.EXAMPLE
powershell -ExecutionPolicy Bypass -File install.ps1 -Uninstall
#>
[CmdletBinding(PositionalBinding = $false)]
param(
    # A checkout to install from, or a package spec; default: the released package.
    [string]$From = "compass-bridge",
    [ValidateSet("", "uv", "pipx", "venv")]
    [string]$Method = "",
    # Run `compass-bridge uninstall`, then remove the package.
    [switch]$Uninstall,
    [Parameter(ValueFromRemainingArguments = $true)]
    [string[]]$InstallArgs = @()
)

$ErrorActionPreference = "Stop"
Set-StrictMode -Version Latest

function Stop-Install([string]$Message) {
    Write-Host "install.ps1: $Message" -ForegroundColor Red
    exit 1
}

# Native programs report failure through their exit code, which PowerShell does not turn into an error.
function Invoke-Checked([string]$Program, [string[]]$Arguments) {
    & $Program @Arguments
    if ($LASTEXITCODE -ne 0) {
        Stop-Install "``$Program $($Arguments -join ' ')`` failed with exit code $LASTEXITCODE"
    }
}

function Find-Python {
    # The py launcher first: it finds installs that are not on PATH.
    foreach ($candidate in @(@("py", "-3"), @("python"), @("python3"))) {
        $program = $candidate[0]
        if (-not (Get-Command $program -ErrorAction SilentlyContinue)) { continue }
        $arguments = @($candidate | Select-Object -Skip 1) + @("-c", "import sys; print(sys.executable) if sys.version_info >= (3, 11) else sys.exit(1)")
        $found = & $program @arguments 2>$null
        if ($LASTEXITCODE -eq 0 -and $found) { return ($found | Select-Object -Last 1).Trim() }
    }
    return $null
}

$Package = "compass-bridge"
$DataDir = Join-Path $env:LOCALAPPDATA "compass-bridge"
$Venv = Join-Path $DataDir "venv"
if (Test-Path -LiteralPath $From -PathType Container) {
    $From = (Resolve-Path -LiteralPath $From).Path
}

if (-not $Method) {
    if (Get-Command uv -ErrorAction SilentlyContinue) { $Method = "uv" }
    elseif (Get-Command pipx -ErrorAction SilentlyContinue) { $Method = "pipx" }
    else { $Method = "venv" }
}

switch ($Method) {
    "uv" {
        if (-not (Get-Command uv -ErrorAction SilentlyContinue)) { Stop-Install "-Method uv, but uv is not on PATH" }
        $BinDir = (& uv tool dir --bin | Select-Object -Last 1).Trim()
    }
    "pipx" {
        if (-not (Get-Command pipx -ErrorAction SilentlyContinue)) { Stop-Install "-Method pipx, but pipx is not on PATH" }
        $BinDir = if ($env:PIPX_BIN_DIR) { $env:PIPX_BIN_DIR } else { Join-Path $HOME ".local\bin" }
    }
    "venv" { $BinDir = Join-Path $Venv "Scripts" }
}
$Exe = Join-Path $BinDir "compass-bridge.exe"

if ($Uninstall) {
    # Undo `compass-bridge install` first (it needs the package), then remove the package itself.
    if (Test-Path -LiteralPath $Exe) { Invoke-Checked $Exe (@("uninstall") + $InstallArgs) }
    switch ($Method) {
        "uv" { Invoke-Checked "uv" @("tool", "uninstall", $Package) }
        "pipx" { Invoke-Checked "pipx" @("uninstall", $Package) }
        "venv" { if (Test-Path -LiteralPath $Venv) { Remove-Item -LiteralPath $Venv -Recurse -Force } }
    }
    Write-Host "compass-bridge is uninstalled. Its keys, usage log and settings stay in $DataDir; delete that to forget them."
    exit 0
}

Write-Host "Installing $Package from $From with $Method"
switch ($Method) {
    "uv" { Invoke-Checked "uv" @("tool", "install", "--force", "--reinstall", $From) }
    "pipx" { Invoke-Checked "pipx" @("install", "--force", $From) }
    "venv" {
        $Python = Find-Python
        if (-not $Python) { Stop-Install "no Python 3.11 or newer found; install one from python.org or the Microsoft Store" }
        New-Item -ItemType Directory -Force -Path $DataDir | Out-Null
        $VenvPython = Join-Path $Venv "Scripts\python.exe"
        if (-not (Test-Path -LiteralPath $VenvPython)) { Invoke-Checked $Python @("-m", "venv", $Venv) }
        Invoke-Checked $VenvPython @("-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--upgrade", $From)
    }
}

if (-not (Test-Path -LiteralPath $Exe)) { Stop-Install "the installation did not produce $Exe" }
Invoke-Checked $Exe @("--version")
# Register with the browsers (manifests and HKCU registry keys) and the MCP clients.
Invoke-Checked $Exe (@("install") + $InstallArgs)

if (-not (($env:Path -split ";") -contains $BinDir)) {
    Write-Host ""
    Write-Host "compass-bridge is in $BinDir, which is not on your PATH. To add it for your user, run:"
    Write-Host "    [Environment]::SetEnvironmentVariable('Path', '$BinDir;' + [Environment]::GetEnvironmentVariable('Path', 'User'), 'User')"
}
Write-Host "Check everything with: compass-bridge doctor"
