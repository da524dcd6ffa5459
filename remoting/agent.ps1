param([string]$RequestText)
# kbfix remote agent, protocol v1 (remoting/PROTOCOL.md). Windows PowerShell 2.0 compatible:
# no ConvertTo-Json, no -in/-notin, no [ordered], no classes, no ::new, no $PSItem, no -Raw.
# Started by remoting/bootstrap.ps1 with the request document as its only argument. Every op runs
# in its own try/catch and answers ok/error; arguments are data (base64), never code. The answer
# is one base64 gzip'd JSON document framed by KBFIX-BEGIN/END-<nonce> on stdout.

Set-StrictMode -Off
$ErrorActionPreference = 'Stop'
$agentStarted = [DateTime]::UtcNow
$inv = [Globalization.CultureInfo]::InvariantCulture
$utf8 = New-Object System.Text.UTF8Encoding($false)
# ServiceController lives in System.ServiceProcess, which PowerShell 2.0 may not have loaded yet.
[void][System.Reflection.Assembly]::LoadWithPartialName('System.ServiceProcess')

# Required and optional arguments per op (the same table as remoting/ops.py).
$opRequired = @{
    'env.expand' = @('text'); 'registry.values' = @('key'); 'file.info' = @('path');
    'log.scan' = @('path', 'pattern'); 'products.list' = @(); 'service.status' = @('name');
    'wsus.find_update' = @('title'); 'file.upload' = @('path', 'data');
    'installer.run' = @('path', 'sha256'); 'service.restart' = @('name');
    'wsus.decline_update' = @('id'); 'wsus.approve_update' = @('id'); 'wsus.workaround' = @('id');
    'products.patches' = @(); 'system.reboot_state' = @(); 'system.reboot' = @(); 'host.environment' = @()
}

# ------------------------------------------------------------------------------ JSON writer

function Add-JsonString($sb, [string]$s) {
    [void]$sb.Append('"')
    if ($s -notmatch '[\x00-\x1f"\\]') { [void]$sb.Append($s) }
    else {
        foreach ($ch in $s.ToCharArray()) {
            $code = [int]$ch
            if ($ch -eq '"') { [void]$sb.Append('\"') }
            elseif ($ch -eq '\') { [void]$sb.Append('\\') }
            elseif ($code -eq 10) { [void]$sb.Append('\n') }
            elseif ($code -eq 13) { [void]$sb.Append('\r') }
            elseif ($code -eq 9) { [void]$sb.Append('\t') }
            elseif ($code -lt 32) { [void]$sb.Append('\u' + $code.ToString('x4')) }
            else { [void]$sb.Append($ch) }
        }
    }
    [void]$sb.Append('"')
}

function Add-Json($sb, $v) {
    if ($null -eq $v) { [void]$sb.Append('null'); return }
    if ($v -is [bool]) { if ($v) { [void]$sb.Append('true') } else { [void]$sb.Append('false') }; return }
    if ($v -is [string] -or $v -is [char]) { Add-JsonString $sb ([string]$v); return }
    if ($v -is [double] -or $v -is [single]) {
        if ([double]::IsNaN($v) -or [double]::IsInfinity($v)) { [void]$sb.Append('null') }
        else { [void]$sb.Append(([double]$v).ToString('R', $inv)) }
        return
    }
    if ($v -is [int] -or $v -is [long] -or $v -is [uint32] -or $v -is [uint64] -or $v -is [int16] -or
        $v -is [uint16] -or $v -is [byte] -or $v -is [sbyte] -or $v -is [decimal]) {
        [void]$sb.Append($v.ToString($inv)); return
    }
    if ($v -is [System.Collections.IDictionary]) {
        [void]$sb.Append('{')
        $first = $true
        foreach ($k in $v.Keys) {
            if (-not $first) { [void]$sb.Append(',') }
            $first = $false
            Add-JsonString $sb ([string]$k)
            [void]$sb.Append(':')
            Add-Json $sb $v[$k]
        }
        [void]$sb.Append('}')
        return
    }
    if ($v -is [byte[]]) { Add-JsonString $sb ([Convert]::ToBase64String($v)); return }
    if ($v -is [System.Collections.IEnumerable]) {
        [void]$sb.Append('[')
        $first = $true
        foreach ($item in $v) {
            if (-not $first) { [void]$sb.Append(',') }
            $first = $false
            Add-Json $sb $item
        }
        [void]$sb.Append(']')
        return
    }
    Add-JsonString $sb ([string]$v)
}

function ConvertTo-AgentJson($v) {
    $sb = New-Object System.Text.StringBuilder
    Add-Json $sb $v
    return $sb.ToString()
}

function New-Map { return (New-Object System.Collections.Specialized.OrderedDictionary) }

# ------------------------------------------------------------------------------ errors

function Stop-Op([string]$kind, [string]$message) {
    # Raised inside an op; Invoke-Op turns it into {"kind", "message", "hresult": null}.
    throw ('KBFIXERR|' + $kind + '|' + $message)
}

function Get-OpError($err) {
    $e = $err.Exception
    while (($e -is [System.Management.Automation.MethodInvocationException] -or
            $e -is [System.Reflection.TargetInvocationException]) -and $null -ne $e.InnerException) {
        $e = $e.InnerException
    }
    $out = New-Map
    $msg = [string]$e.Message
    if ($msg.StartsWith('KBFIXERR|')) {
        $parts = $msg.Split([char[]]'|', 3)
        $out['kind'] = $parts[1]; $out['message'] = $parts[2]; $out['hresult'] = $null
        return $out
    }
    $kind = 'exception'
    if ($e -is [System.UnauthorizedAccessException] -or $e -is [System.Security.SecurityException]) { $kind = 'access_denied' }
    elseif ($e -is [System.IO.FileNotFoundException] -or $e -is [System.IO.DirectoryNotFoundException] -or
            $e -is [System.Management.Automation.ItemNotFoundException]) { $kind = 'not_found' }
    elseif ($e -is [System.TimeoutException]) { $kind = 'timeout' }
    $hr = [System.Runtime.InteropServices.Marshal]::GetHRForException($e)
    $out['kind'] = $kind
    $out['message'] = $msg.Trim()
    $out['hresult'] = $null
    if ($hr -ne 0) { $out['hresult'] = '0x' + $hr.ToString('X8') }
    return $out
}

# ------------------------------------------------------------------------------ request

function Read-Request([string]$text) {
    $req = New-Map
    $req['nonce'] = $null; $req['limit'] = [long]8388608  # 8 MiB: PROTOCOL.md, WinRM 2.0 memory quota
    $ops = New-Object System.Collections.ArrayList
    $lines = $text.Split([char[]]"`n")
    if ($lines.Length -lt 1 -or $lines[0].TrimEnd([char[]]"`r") -ne "kbfix-agent-request`t1") {
        throw 'request document is not kbfix-agent-request version 1'
    }
    $cur = $null
    for ($i = 1; $i -lt $lines.Length; $i++) {
        $line = $lines[$i].TrimEnd([char[]]"`r")
        if ($line.Trim().Length -eq 0) { continue }
        $f = $line.Split([char[]]"`t")
        if ($f[0] -eq 'nonce' -and $f.Length -eq 2 -and $f[1] -match '^[0-9a-f]{32}$') { $req['nonce'] = $f[1] }
        elseif ($f[0] -eq 'limit' -and $f.Length -eq 2 -and $f[1] -match '^[0-9]{1,18}$') { $req['limit'] = [long]::Parse($f[1], $inv) }
        elseif ($f[0] -eq 'op' -and $f.Length -eq 3 -and $f[1] -match '^[A-Za-z0-9_.-]{1,64}$') {
            $cur = New-Map
            $cur['id'] = $f[1]; $cur['name'] = $f[2]; $cur['args'] = @{}; $cur['bad'] = $null
            [void]$ops.Add($cur)
        }
        elseif ($f[0] -eq 'arg' -and $f.Length -eq 3 -and $null -ne $cur) {
            try { $bytes = [Convert]::FromBase64String($f[2]) }
            catch { $cur['bad'] = "argument '" + $f[1] + "' is not base64"; continue }
            if (-not $cur['args'].ContainsKey($f[1])) { $cur['args'][$f[1]] = New-Object System.Collections.ArrayList }
            [void]$cur['args'][$f[1]].Add($bytes)
        }
        elseif ($null -ne $cur) { $cur['bad'] = 'unexpected request line ' + $i }
    }
    if ($null -eq $req['nonce']) { throw 'request document has no valid nonce' }
    $req['ops'] = $ops
    return $req
}

function Get-ArgBytes($op, [string]$key) {
    if (-not $op['args'].ContainsKey($key)) { return $null }
    return ,($op['args'][$key][0])
}

function Get-ArgText($op, [string]$key, $default) {
    if (-not $op['args'].ContainsKey($key)) { return $default }
    return $utf8.GetString($op['args'][$key][0])
}

function Get-ArgTexts($op, [string]$key) {
    $list = New-Object System.Collections.ArrayList
    if ($op['args'].ContainsKey($key)) {
        foreach ($b in $op['args'][$key]) { [void]$list.Add($utf8.GetString($b)) }
    }
    return ,$list
}

function Get-ArgLong($op, [string]$key, [long]$default, [long]$min, [long]$max) {
    $t = Get-ArgText $op $key $null
    if ($null -eq $t) { return $default }
    $n = [long]0
    if (-not [long]::TryParse($t.Trim(), [Globalization.NumberStyles]::Integer, $inv, [ref]$n)) {
        Stop-Op 'invalid_args' ("argument '" + $key + "' is not an integer")
    }
    if ($n -lt $min -or $n -gt $max) { Stop-Op 'invalid_args' ("argument '" + $key + "' must be between " + $min + ' and ' + $max) }
    return $n
}

function Get-ArgFlag($op, [string]$key) {
    return ((Get-ArgText $op $key '0') -eq '1')
}

# ------------------------------------------------------------------------------ host facts

function Test-Os64 {
    if ([IntPtr]::Size -eq 8) { return $true }
    return ($null -ne $env:PROCESSOR_ARCHITEW6432 -and $env:PROCESSOR_ARCHITEW6432.Length -gt 0)
}

function Get-HostInfo {
    $h = New-Map
    $h['computer_name'] = [Environment]::MachineName
    $v = [Environment]::OSVersion.Version
    $h['os_version'] = ('{0}.{1}.{2}' -f $v.Major, $v.Minor, $v.Build)
    $arch = 'x86'
    if (Test-Os64) { $arch = 'x64' }
    if ($env:PROCESSOR_ARCHITECTURE -eq 'IA64' -or $env:PROCESSOR_ARCHITEW6432 -eq 'IA64') { $arch = 'ia64' }
    $h['arch'] = $arch
    $h['culture'] = [Globalization.CultureInfo]::CurrentCulture.Name
    $psv = $PSVersionTable.PSVersion
    $h['ps_version'] = ('{0}.{1}' -f $psv.Major, $psv.Minor)
    return $h
}

# ------------------------------------------------------------------------------ paths

function Expand-Refs([string]$text, $ctx) {
    # ${reg:ID:NAME} -> string value NAME read by the earlier registry.values op ID (view 64 first).
    $rx = New-Object System.Text.RegularExpressions.Regex('\$\{reg:([A-Za-z0-9_.-]{1,64}):([^}]*)\}')
    $sb = New-Object System.Text.StringBuilder
    $pos = 0
    foreach ($m in $rx.Matches($text)) {
        [void]$sb.Append($text.Substring($pos, $m.Index - $pos))
        $value = $null
        $views = $ctx['reg'][$m.Groups[1].Value]
        if ($null -ne $views) {
            foreach ($vn in @('64', '32')) {
                if ($null -ne $value) { break }
                $view = $views[$vn]
                if ($null -eq $view -or -not $view['exists']) { continue }
                foreach ($name in $view['values'].Keys) {
                    if ($name -ieq $m.Groups[2].Value) {
                        $entry = $view['values'][$name]
                        if ($entry['value'] -is [string] -and ($entry['type'] -eq 'REG_SZ' -or $entry['type'] -eq 'REG_EXPAND_SZ')) {
                            $value = $entry['value']
                        }
                        break
                    }
                }
            }
        }
        if ($null -eq $value) { Stop-Op 'not_found' ('unresolved reference ' + $m.Value) }
        [void]$sb.Append($value)
        $pos = $m.Index + $m.Length
    }
    [void]$sb.Append($text.Substring($pos))
    return $sb.ToString()
}

function Get-PathArg($op, [string]$key, $ctx) {
    $raw = Get-ArgText $op $key $null
    if ($null -eq $raw -or $raw.Length -eq 0) { Stop-Op 'invalid_args' ("missing required argument '" + $key + "'") }
    return [Environment]::ExpandEnvironmentVariables((Expand-Refs $raw $ctx))
}

function Open-Shared([string]$path) {
    # FileShare ReadWrite|Delete: a log that IIS or the SMS executive holds open still reads.
    $share = [System.IO.FileShare]([int][System.IO.FileShare]::ReadWrite -bor [int][System.IO.FileShare]::Delete)
    return (New-Object System.IO.FileStream($path, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Read, $share))
}

function New-Sha256 {
    # With the FIPS policy on ("System cryptography: Use FIPS compliant algorithms"), the
    # SHA256Managed constructor throws InvalidOperationException (MS docs, SHA256Managed
    # constructor). SHA256CryptoServiceProvider (.NET 3.5, System.Core) is FIPS-validated.
    try { return (New-Object System.Security.Cryptography.SHA256Managed) } catch { }
    [void][System.Reflection.Assembly]::LoadWithPartialName('System.Core')
    try { return (New-Object System.Security.Cryptography.SHA256CryptoServiceProvider) } catch { }
    Stop-Op 'exception' ('no SHA-256 implementation may run here: SHA256Managed is refused (FIPS policy on) and ' +
        'SHA256CryptoServiceProvider is missing (.NET Framework 3.5 needed); nothing was run')
}

function Get-Sha256Hex([string]$path) {
    $sha = New-Sha256
    $fs = Open-Shared $path
    try { $hash = $sha.ComputeHash($fs) } finally { $fs.Close() }
    $sb = New-Object System.Text.StringBuilder
    foreach ($b in $hash) { [void]$sb.Append($b.ToString('x2')) }
    return $sb.ToString()
}

# ------------------------------------------------------------------------------ registry

function Split-RegKey([string]$key) {
    $k = $key.Trim().TrimEnd([char[]]'\')
    $i = $k.IndexOf('\')
    if ($i -lt 0) { $hive = $k; $sub = '' } else { $hive = $k.Substring(0, $i); $sub = $k.Substring($i + 1) }
    switch ($hive.TrimEnd([char[]]':').ToUpperInvariant()) {
        'HKLM' { $h = 'LocalMachine'; $n = 'HKLM' }
        'HKEY_LOCAL_MACHINE' { $h = 'LocalMachine'; $n = 'HKLM' }
        'HKCU' { $h = 'CurrentUser'; $n = 'HKCU' }
        'HKEY_CURRENT_USER' { $h = 'CurrentUser'; $n = 'HKCU' }
        'HKCR' { $h = 'ClassesRoot'; $n = 'HKCR' }
        'HKEY_CLASSES_ROOT' { $h = 'ClassesRoot'; $n = 'HKCR' }
        'HKU' { $h = 'Users'; $n = 'HKU' }
        'HKEY_USERS' { $h = 'Users'; $n = 'HKU' }
        default { Stop-Op 'invalid_args' ('unknown registry hive in ' + $key) }
    }
    $r = New-Map
    $r['hive'] = $h; $r['name'] = $n; $r['sub'] = $sub
    return $r
}

function Get-WowPath([string]$sub) {
    # The 32-bit view of HKLM\SOFTWARE\X on a 64-bit OS is HKLM\SOFTWARE\Wow6432Node\X
    # (MS docs "Registry Keys Affected by WOW64").
    if ($sub -match '^(?i)software(\\|$)' -and $sub -notmatch '^(?i)software\\wow6432node(\\|$)') {
        if ($sub.Length -le 8) { return $sub.Substring(0, 8) + '\Wow6432Node' }
        return $sub.Substring(0, 8) + '\Wow6432Node' + $sub.Substring(8)
    }
    return $sub
}

function Open-RegView($parts, [string]$view) {
    # Returns @{key = RegistryKey or $null; path = physical path}. .NET 4 has OpenBaseKey with a
    # RegistryView; on .NET 2 (PowerShell 2.0) use the Wow6432Node physical path instead.
    $os64 = Test-Os64
    $sub = $parts['sub']
    $phys = $sub
    if ($os64 -and $view -eq '32') { $phys = Get-WowPath $sub }
    $r = New-Map
    $r['path'] = $parts['name'] + '\' + $phys
    $r['key'] = $null
    $hive = [Microsoft.Win32.RegistryHive]$parts['hive']
    $base = $null
    if ($null -ne [Microsoft.Win32.RegistryKey].GetMethod('OpenBaseKey')) {
        $rv = 'Default'
        if ($os64) { if ($view -eq '32') { $rv = 'Registry32' } else { $rv = 'Registry64' } }
        $viewEnum = [Enum]::Parse([Type]'Microsoft.Win32.RegistryView', $rv)
        $base = [Microsoft.Win32.RegistryKey]::OpenBaseKey($hive, $viewEnum)
        $open = $sub
    } else {
        switch ($parts['hive']) {
            'LocalMachine' { $base = [Microsoft.Win32.Registry]::LocalMachine }
            'CurrentUser' { $base = [Microsoft.Win32.Registry]::CurrentUser }
            'ClassesRoot' { $base = [Microsoft.Win32.Registry]::ClassesRoot }
            default { $base = [Microsoft.Win32.Registry]::Users }
        }
        $open = $phys
    }
    if ($open.Length -eq 0) { $r['key'] = $base } else { $r['key'] = $base.OpenSubKey($open, $false) }
    return $r
}

function Get-RegValueEntry($key, [string]$name) {
    $e = New-Map
    $kind = $key.GetValueKind($name)
    $raw = $key.GetValue($name, $null, [Microsoft.Win32.RegistryValueOptions]::DoNotExpandEnvironmentNames)
    switch ([string]$kind) {
        'String' { $e['type'] = 'REG_SZ'; $e['value'] = [string]$raw }
        'ExpandString' { $e['type'] = 'REG_EXPAND_SZ'; $e['value'] = [string]$raw }
        'DWord' { $e['type'] = 'REG_DWORD'; $e['value'] = [long][BitConverter]::ToUInt32([BitConverter]::GetBytes([int]$raw), 0) }
        'QWord' { $e['type'] = 'REG_QWORD'; $e['value'] = [long]$raw }
        'MultiString' { $e['type'] = 'REG_MULTI_SZ'; $list = New-Object System.Collections.ArrayList; foreach ($s in $raw) { [void]$list.Add([string]$s) }; $e['value'] = $list }
        default {
            $e['type'] = 'REG_BINARY'
            if ($raw -is [byte[]]) { $e['value'] = [Convert]::ToBase64String($raw) } else { $e['value'] = [Convert]::ToBase64String($utf8.GetBytes([string]$raw)) }
        }
    }
    return $e
}

function Invoke-RegistryValues($op, $ctx) {
    $parts = Split-RegKey (Get-ArgText $op 'key' '')
    $viewArg = Get-ArgText $op 'view' 'both'
    if ($viewArg -eq 'both') { $views = @('64', '32') }
    elseif ($viewArg -eq '64' -or $viewArg -eq '32') { $views = @($viewArg) }
    else { Stop-Op 'invalid_args' "argument 'view' must be 64, 32 or both" }
    $names = Get-ArgTexts $op 'name'
    $wantSubkeys = Get-ArgFlag $op 'subkeys'
    $out = New-Map
    foreach ($vn in $views) {
        $v = New-Map
        $opened = Open-RegView $parts $vn
        $key = $opened['key']
        $v['exists'] = ($null -ne $key)
        $v['path'] = $opened['path']
        $vals = New-Map
        $subs = New-Object System.Collections.ArrayList
        if ($null -ne $key) {
            try {
                $present = $key.GetValueNames()
                if ($names.Count -eq 0) { foreach ($n in $present) { $vals[$n] = Get-RegValueEntry $key $n } }
                else {
                    foreach ($want in $names) {
                        foreach ($n in $present) { if ($n -ieq $want) { $vals[$n] = Get-RegValueEntry $key $n; break } }
                    }
                }
                if ($wantSubkeys) { foreach ($s in $key.GetSubKeyNames()) { [void]$subs.Add($s) } }
            } finally { $key.Close() }
        }
        $v['values'] = $vals
        $v['subkeys'] = $subs
        $out[$vn] = $v
    }
    $ctx['reg'][$op['id']] = $out
    $d = New-Map
    $d['views'] = $out
    return $d
}

# ------------------------------------------------------------------------------ files

function Invoke-FileInfo($op, $ctx) {
    $path = Get-PathArg $op 'path' $ctx
    $fi = New-Object System.IO.FileInfo($path)
    $d = New-Map
    $d['exists'] = $fi.Exists
    $d['path'] = $path
    $d['size'] = $null; $d['mtime'] = $null; $d['file_version'] = $null
    $d['file_version_string'] = $null; $d['product_version'] = $null; $d['sha256'] = $null
    if (-not $fi.Exists) { return $d }
    $d['size'] = [long]$fi.Length
    $d['mtime'] = $fi.LastWriteTimeUtc.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", $inv)
    $vi = [System.Diagnostics.FileVersionInfo]::GetVersionInfo($path)
    if ($null -ne $vi.FileVersion -or ($vi.FileMajorPart + $vi.FileMinorPart + $vi.FileBuildPart + $vi.FilePrivatePart) -gt 0) {
        # The binary FILEVERSION (File*Part) is authoritative; the string can carry text like "3.1.6001.66 (built by: ...)".
        $d['file_version'] = ('{0}.{1}.{2}.{3}' -f $vi.FileMajorPart, $vi.FileMinorPart, $vi.FileBuildPart, $vi.FilePrivatePart)
    }
    $d['file_version_string'] = $vi.FileVersion
    $d['product_version'] = $vi.ProductVersion
    if (Get-ArgFlag $op 'sha256') { $d['sha256'] = Get-Sha256Hex $path }
    return $d
}

# ------------------------------------------------------------------------------ log scan

function Get-LogEncoding($fs) {
    # BOM first; then UTF-16 by NUL bytes at odd/even positions; then strict UTF-8; else ANSI.
    $r = New-Map
    $head = New-Object byte[] 65536
    [void]$fs.Seek(0, [System.IO.SeekOrigin]::Begin)
    $n = 0
    while ($n -lt $head.Length) { $got = $fs.Read($head, $n, $head.Length - $n); if ($got -le 0) { break }; $n += $got }
    $r['bom'] = 0
    if ($n -ge 3 -and $head[0] -eq 0xEF -and $head[1] -eq 0xBB -and $head[2] -eq 0xBF) { $r['name'] = 'utf-8'; $r['bom'] = 3 }
    elseif ($n -ge 2 -and $head[0] -eq 0xFF -and $head[1] -eq 0xFE) { $r['name'] = 'utf-16le'; $r['bom'] = 2 }
    elseif ($n -ge 2 -and $head[0] -eq 0xFE -and $head[1] -eq 0xFF) { $r['name'] = 'utf-16be'; $r['bom'] = 2 }
    else {
        # NUL bytes: more than 30% of the odd (even) positions and under 5% of the others -> UTF-16
        $zeroOdd = 0; $zeroEven = 0
        $i = [Array]::IndexOf($head, [byte]0, 0, $n)
        while ($i -ge 0) {
            if ($i % 2 -eq 1) { $zeroOdd++ } else { $zeroEven++ }
            if ($i + 1 -ge $n) { break }
            $i = [Array]::IndexOf($head, [byte]0, $i + 1, $n - $i - 1)
        }
        $half = [Math]::Floor($n / 2)
        if ($n -ge 2 -and $zeroOdd -gt $half * 0.3 -and $zeroEven -lt $half * 0.05) { $r['name'] = 'utf-16le' }
        elseif ($n -ge 2 -and $zeroEven -gt $half * 0.3 -and $zeroOdd -lt $half * 0.05) { $r['name'] = 'utf-16be' }
        else {
            # ISO-8859-1 maps each byte to one char, so the regex sees the raw bytes
            $ascii = ([System.Text.Encoding]::GetEncoding(28591).GetString($head, 0, $n) -notmatch '[\x80-\xff]')
            $strict = New-Object System.Text.UTF8Encoding($false, $true)
            $len = $n
            if ($n -eq $head.Length) {
                # do not judge a multi-byte sequence cut by the sample's end
                $cutAt = $n - 1
                while ($cutAt -gt 0 -and $n - $cutAt -lt 4 -and ($head[$cutAt] -band 0xC0) -eq 0x80) { $cutAt-- }
                if ($head[$cutAt] -ge 0xC0) { $len = $cutAt }
            }
            if ($ascii) { $r['name'] = 'ansi' }  # nothing to tell them apart: the system codepage reads ASCII right
            else {
                try { [void]$strict.GetCharCount($head, 0, $len); $r['name'] = 'utf-8' } catch { $r['name'] = 'ansi' }
            }
        }
    }
    switch ($r['name']) {
        'utf-16le' { $r['enc'] = New-Object System.Text.UnicodeEncoding($false, $false); $r['unit'] = 2 }
        'utf-16be' { $r['enc'] = New-Object System.Text.UnicodeEncoding($true, $false); $r['unit'] = 2 }
        'utf-8' { $r['enc'] = $utf8; $r['unit'] = 1 }
        default { $r['enc'] = [System.Text.Encoding]::Default; $r['unit'] = 1 }
    }
    # 8-bit logs without a BOM are decoded line by line: strict UTF-8 when the line is valid
    # UTF-8, else the system (ANSI) codepage; a log whose first 64 KiB is ASCII, or that mixes
    # both after a culture change, still reads every line right (PROTOCOL.md, log.scan).
    $r['mixed'] = ($r['unit'] -eq 1 -and $r['bom'] -eq 0)
    $r['enc8'] = $utf8  # replacement-fallback UTF-8: invalid bytes become U+FFFD, nothing throws
    $r['ansi'] = [System.Text.Encoding]::Default
    return $r
}

function Decode-Line($det, $bytes, [int]$start, [int]$count) {
    # An 8-bit line is UTF-8 when it decodes without a replacement character (U+FFFD), else ANSI.
    # No exception as control flow: a strict decoder throwing once per ANSI line costs a
    # first-chance exception per line on PowerShell 2.0 (.NET 2.0), orders of magnitude slower
    # than two GetString calls and an IndexOf (PROTOCOL.md, log.scan; benchmarks/agent_line_cost.py).
    if ($det['mixed']) {
        $text = $det['enc8'].GetString($bytes, $start, $count)
        if ($text.IndexOf([char]0xFFFD) -lt 0) { return $text }
        return $det['ansi'].GetString($bytes, $start, $count)
    }
    return $det['enc'].GetString($bytes, $start, $count)
}

function Find-Newline($buf, [int]$from, [int]$end, [int]$unit, [bool]$bigEndian) {
    # Index of the first line-feed code unit in buf[from, end), or -1. UTF-16 units start at even
    # offsets relative to `from` (callers keep `from` aligned).
    if ($unit -eq 1) {
        if ($end -le $from) { return -1 }
        return [Array]::IndexOf($buf, [byte]10, $from, $end - $from)
    }
    $i = $from
    while ($i -lt $end - 1) {
        $j = [Array]::IndexOf($buf, [byte]10, $i, $end - $i)
        if ($j -lt 0) { return -1 }
        if ($bigEndian) {
            if ((($j - $from) % 2) -eq 1 -and $buf[$j - 1] -eq 0) { return $j - 1 }
        } else {
            if ((($j - $from) % 2) -eq 0 -and $j + 1 -lt $end -and $buf[$j + 1] -eq 0) { return $j }
        }
        $i = $j + 1
    }
    return -1
}

function Find-LastNewline($buf, [int]$end, [int]$unit, [bool]$bigEndian) {
    # Index of the last line-feed code unit in buf[0, end), or -1 (UTF-16 units at even offsets).
    $i = $end - 1
    while ($i -ge 0) {
        $j = [Array]::LastIndexOf($buf, [byte]10, $i, $i + 1)
        if ($j -lt 0) { return -1 }
        if ($unit -eq 1) { return $j }
        if ($bigEndian) {
            if (($j % 2) -eq 1 -and $buf[$j - 1] -eq 0) { return $j - 1 }
        } else {
            if (($j % 2) -eq 0 -and $j + 1 -lt $end -and $buf[$j + 1] -eq 0) { return $j }
        }
        $i = $j - 1
    }
    return -1
}

function Skip-QuietBlock($buf, [int]$avail, $det, $opt, $counts, $before) {
    # When no pattern that still needs matches occurs anywhere in the block's complete lines,
    # skip them without splitting (only the last `context` lines are kept for `before`).
    # Returns the buffer index after the skipped lines, or 0 when the block must be read line by line.
    $unit = [int]$det['unit']
    $last = Find-LastNewline $buf $avail $unit ($det['name'] -eq 'utf-16be')
    if ($last -lt 0) { return 0 }
    $whole = $det['enc'].GetString($buf, 0, $last + $unit)
    $text = $whole
    # searched without CRs (`x$` must see LF ends); context lines below come from $whole, as read
    if ($text.IndexOf([char]13) -ge 0) { $text = $text.Replace([string][char]13, '') }
    $texts = @($text)
    if ($det['mixed']) {
        # a mixed block is searched in both readings: each line matches in the one it was written in
        $alt = $det['ansi']
        if ($det['name'] -eq 'ansi') { $alt = $utf8 }
        $text2 = $alt.GetString($buf, 0, $last + $unit)
        if ($text2.IndexOf([char]13) -ge 0) { $text2 = $text2.Replace([string][char]13, '') }
        $texts = @($text, $text2)
    }
    $pre = $opt['prefilter']
    for ($p = 0; $p -lt $pre.Count; $p++) {
        if ($counts[$p] -ge [int]$opt['max_matches']) { continue }
        if ($null -eq $pre[$p]) { return 0 }
        foreach ($t in $texts) { if ($pre[$p].IsMatch($t)) { return 0 } }
    }
    $k = [int]$opt['context']
    if ($k -gt 0 -and $det['mixed']) {
        # context lines of a mixed block: decode each of the last k lines on its own
        $tail = New-Object System.Collections.ArrayList
        $endIdx = $last  # index of the final line feed
        while ($tail.Count -lt $k -and $endIdx -gt 0) {
            $prev = [Array]::LastIndexOf($buf, [byte]10, $endIdx - 1)
            $ls = $prev + 1
            $line = Decode-Line $det $buf $ls ($endIdx - $ls)
            if ($line.EndsWith("`r")) { $line = $line.Substring(0, $line.Length - 1) }
            if ($line.Length -gt [int]$opt['max_line_chars']) { $line = $line.Substring(0, [int]$opt['max_line_chars']) }
            [void]$tail.Insert(0, $line)
            if ($prev -lt 0) { break }
            $endIdx = $prev
        }
        foreach ($line in $tail) {
            [void]$before.Add($line)
            if ($before.Count -gt $k) { $before.RemoveAt(0) }
        }
    }
    elseif ($k -gt 0) {
        $tail = New-Object System.Collections.ArrayList
        $pos = $whole.Length - 1  # the final line feed
        while ($tail.Count -lt $k -and $pos -gt 0) {
            $prev = $whole.LastIndexOf([char]10, $pos - 1)
            $line = $whole.Substring($prev + 1, $pos - $prev - 1)
            if ($line.EndsWith("`r")) { $line = $line.Substring(0, $line.Length - 1) }
            if ($line.Length -gt [int]$opt['max_line_chars']) { $line = $line.Substring(0, [int]$opt['max_line_chars']) }
            [void]$tail.Insert(0, $line)
            if ($prev -lt 0) { break }
            $pos = $prev
        }
        foreach ($line in $tail) {
            [void]$before.Add($line)
            if ($before.Count -gt $k) { $before.RemoveAt(0) }
        }
    }
    return ($last + $unit)
}

function Invoke-ScanFile([string]$path, [bool]$isMain, $opt) {
    $lf = New-Map
    $lf['path'] = $path
    $fi = New-Object System.IO.FileInfo($path)
    $lf['exists'] = $fi.Exists
    $lf['size'] = [long]0; $lf['encoding'] = $null; $lf['start_offset'] = [long]0; $lf['end_offset'] = [long]0
    $matchList = New-Object System.Collections.ArrayList
    $full = New-Object System.Collections.ArrayList
    $lf['matches'] = $matchList
    $lf['patterns_full'] = $full
    if (-not $fi.Exists) { return $lf }
    $fs = Open-Shared $path
    try {
        $size = [long]$fs.Length
        $lf['size'] = $size
        $det = Get-LogEncoding $fs
        $lf['encoding'] = $det['name']
        $enc = $det['enc']; $unit = [int]$det['unit']; $bomLen = [long]$det['bom']
        $bigEndian = ($det['name'] -eq 'utf-16be')
        $start = $bomLen
        $skipFirst = $false
        if ($isMain -and $opt['start_offset'] -gt 0) {
            $start = [long]$opt['start_offset']
            if ($start -gt $size) { $start = $bomLen }  # the log was truncated or rotated: read it from the top
        } elseif ($opt['tail_bytes'] -gt 0 -and $size - $opt['tail_bytes'] -gt $bomLen) {
            $start = $size - [long]$opt['tail_bytes']
            if ($unit -eq 2 -and (($start - $bomLen) % 2) -ne 0) { $start++ }
            # the window may begin mid-line: drop that partial line unless a line feed precedes it
            $prev = New-Object byte[] 2
            [void]$fs.Seek($start - $unit, [System.IO.SeekOrigin]::Begin)
            [void]$fs.Read($prev, 0, $unit)
            if ($unit -eq 1) { $skipFirst = ($prev[0] -ne 10) }
            elseif ($bigEndian) { $skipFirst = -not ($prev[0] -eq 0 -and $prev[1] -eq 10) }
            else { $skipFirst = -not ($prev[0] -eq 10 -and $prev[1] -eq 0) }
        }
        if ($start -lt $bomLen) { $start = $bomLen }
        if ($unit -eq 2 -and (($start - $bomLen) % 2) -ne 0) { $start++ }
        $lf['start_offset'] = $start
        $end = $size
        $patterns = $opt['regex']
        $counts = New-Object int[] $patterns.Count
        $maxMatches = [int]$opt['max_matches']
        $ctxLines = [int]$opt['context']
        $maxChars = [int]$opt['max_line_chars']
        $lineCap = [Math]::Max(1024, $maxChars * 4 + 8)
        if ($lineCap % 2 -ne 0) { $lineCap++ }
        $block = 1048576
        $buf = New-Object byte[] ($block + $lineCap + 8)
        $before = New-Object System.Collections.ArrayList
        $pending = New-Object System.Collections.ArrayList
        $base = $start           # file offset of buf[0]
        $carry = 0               # bytes of the current (unfinished) line already in buf
        $longHead = $null        # first bytes of an over-long line whose middle was dropped
        $longStart = [long]-1
        $pos = $start
        [void]$fs.Seek($start, [System.IO.SeekOrigin]::Begin)
        $done = $false
        $reached = $end
        while (-not $done) {
            $want = [int][Math]::Min([long]$block, $end - $pos)
            $n = 0
            if ($want -gt 0) { $n = $fs.Read($buf, $carry, $want) }
            if ($n -lt 0) { $n = 0 }
            $pos += $n
            $avail = $carry + $n
            $eof = ($n -eq 0 -or $pos -ge $end)
            $ls = 0
            if (-not $skipFirst -and $null -eq $longHead -and $pending.Count -eq 0) {
                $ls = Skip-QuietBlock $buf $avail $det $opt $counts $before
            }
            $searchFrom = $ls
            while ($true) {
                $nl = Find-Newline $buf $searchFrom $avail $unit $bigEndian
                $lineEndIdx = $nl
                if ($nl -lt 0) {
                    if (-not $eof) {
                        if ($avail - $ls -gt $lineCap) {
                            if ($null -eq $longHead) {
                                $longHead = New-Object byte[] $lineCap
                                [Array]::Copy($buf, $ls, $longHead, 0, $lineCap)
                                $longStart = $base + $ls
                            }
                            $ls = $avail  # drop the middle of the over-long line
                        }
                        break
                    }
                    if ($avail -le $ls -and $null -eq $longHead) { break }
                    $lineEndIdx = $avail
                }
                if ($null -ne $longHead) {
                    $lineOffset = $longStart; $text = Decode-Line $det $longHead 0 $longHead.Length; $cut = $true
                    $longHead = $null
                } else {
                    $lineOffset = $base + $ls
                    $take = $lineEndIdx - $ls
                    $cut = $false
                    if ($take -gt $lineCap) { $take = $lineCap; $cut = $true }
                    $text = Decode-Line $det $buf $ls $take
                }
                if ($text.EndsWith("`r")) { $text = $text.Substring(0, $text.Length - 1) }
                if ($text.Length -gt $maxChars) { $text = $text.Substring(0, $maxChars); $cut = $true }
                if ($nl -lt 0) { $ls = $avail } else { $ls = $nl + $unit }
                $searchFrom = $ls
                if ($skipFirst) { $skipFirst = $false; if ($nl -lt 0) { break }; continue }
                # after-context for earlier matches
                if ($pending.Count -gt 0) {
                    $still = New-Object System.Collections.ArrayList
                    foreach ($pm in $pending) {
                        [void]$pm['after'].Add($text)
                        if ($pm['after'].Count -lt $ctxLines) { [void]$still.Add($pm) }
                    }
                    $pending = $still
                }
                for ($p = 0; $p -lt $patterns.Count; $p++) {
                    if ($counts[$p] -ge $maxMatches) { continue }
                    if ($patterns[$p].IsMatch($text)) {
                        $m = New-Map
                        $m['pattern'] = $p
                        $m['offset'] = [long]$lineOffset
                        $m['line'] = $text
                        $m['cut'] = $cut
                        $m['before'] = $before.ToArray()
                        $m['after'] = New-Object System.Collections.ArrayList
                        [void]$matchList.Add($m)
                        if ($ctxLines -gt 0) { [void]$pending.Add($m) }
                        $counts[$p]++
                        if ($counts[$p] -ge $maxMatches) { [void]$full.Add($p) }
                    }
                }
                if ($ctxLines -gt 0) {
                    [void]$before.Add($text)
                    if ($before.Count -gt $ctxLines) { $before.RemoveAt(0) }
                }
                if ($full.Count -eq $patterns.Count -and $pending.Count -eq 0) {
                    # every pattern has its N matches and their context: stop at this line's end
                    $reached = $base + $ls
                    if ($reached -gt $end) { $reached = $end }
                    $done = $true
                    break
                }
                if ($nl -lt 0) { break }
            }
            if ($done -or $eof) { break }
            $carry = $avail - $ls
            if ($carry -gt 0) { [Array]::Copy($buf, $ls, $buf, 0, $carry) }
            $base += $ls
        }
        $lf['end_offset'] = [long]$reached
    } finally { $fs.Close() }
    return $lf
}

function Get-RotatedSiblings([string]$path) {
    # Rotated copies beside the log, oldest first, as SMS/ConfigMgr (NAME.lo_) and WSUS/WUA
    # (NAME.old, NAME.log.old, NAME.bak, NAME.log.1) roll them; NAME = path without extension.
    $ext = [System.IO.Path]::GetExtension($path)
    $stem = $path.Substring(0, $path.Length - $ext.Length)
    $cands = New-Object System.Collections.ArrayList
    if ($ext.Length -ge 2) { [void]$cands.Add($stem + $ext.Substring(0, $ext.Length - 1) + '_') }
    foreach ($c in @(($stem + '.old'), ($path + '.old'), ($stem + '.bak'), ($path + '.1'))) { [void]$cands.Add($c) }
    $found = New-Object System.Collections.ArrayList
    $seen = @{}
    foreach ($full in $cands) {
        if ($seen.ContainsKey($full) -or $full -ieq $path) { continue }
        $seen[$full] = $true
        $fi = New-Object System.IO.FileInfo($full)
        if ($fi.Exists) { [void]$found.Add($fi) }
    }
    $paths = New-Object System.Collections.ArrayList
    if ($found.Count -eq 0) { return ,$paths }  # PowerShell 2.0 runs foreach once over $null
    foreach ($f in @($found.ToArray() | Sort-Object LastWriteTimeUtc)) { [void]$paths.Add($f.FullName) }
    return ,$paths
}

function Get-ScanKey($op, [string]$path) {
    # The resolved path and every other argument: two candidates that resolve to one file with the
    # same arguments (TargetDir and the %ProgramFiles% fallback) are one scan.
    $sb = New-Object System.Text.StringBuilder
    # one file, however spelled: repeated separators folded (a UNC path keeps its leading \\)
    [void]$sb.Append([Regex]::Replace($path, '(?<=.)[\\/]+', '\').ToLowerInvariant())
    $keys = New-Object System.Collections.ArrayList
    foreach ($k in $op['args'].Keys) { if ($k -ne 'path') { [void]$keys.Add([string]$k) } }
    $keys.Sort([StringComparer]::Ordinal)
    foreach ($k in $keys) {
        foreach ($b in $op['args'][$k]) { [void]$sb.Append('|' + $k + '=' + [Convert]::ToBase64String($b)) }
    }
    return $sb.ToString()
}

function Invoke-LogScan($op, $ctx) {
    $path = Get-PathArg $op 'path' $ctx
    $scanKey = Get-ScanKey $op $path
    if ($ctx['scans'].ContainsKey($scanKey)) {
        $same = New-Map
        $same['files'] = New-Object System.Collections.ArrayList
        $same['same_as'] = $ctx['scans'][$scanKey]
        return $same
    }
    $ctx['scans'][$scanKey] = $op['id']
    $opt = @{}
    $opt['max_matches'] = Get-ArgLong $op 'max_matches' 20 1 1000
    $opt['context'] = Get-ArgLong $op 'context' 0 0 20
    $opt['start_offset'] = Get-ArgLong $op 'start_offset' 0 0 ([long]::MaxValue)
    $opt['tail_bytes'] = Get-ArgLong $op 'tail_bytes' 0 0 ([long]::MaxValue)
    $opt['max_line_chars'] = Get-ArgLong $op 'max_line_chars' 4096 16 1048576
    $regex = New-Object System.Collections.ArrayList
    $flags = [System.Text.RegularExpressions.RegexOptions]'IgnoreCase, CultureInvariant'
    # Block prefilter: the same pattern over a whole 1 MiB block of lines (Multiline, so ^ and $
    # still mean line start/end). It cannot miss a line match, except for patterns using \A, \Z,
    # \z, \G or lookarounds, which therefore are always matched line by line ($null here).
    $pre = New-Object System.Collections.ArrayList
    $preFlags = [System.Text.RegularExpressions.RegexOptions]'IgnoreCase, CultureInvariant, Multiline'
    foreach ($p in (Get-ArgTexts $op 'pattern')) {
        try { [void]$regex.Add((New-Object System.Text.RegularExpressions.Regex($p, $flags))) }
        catch { Stop-Op 'invalid_args' ('pattern ' + $regex.Count + ' is not a valid regular expression') }
        if ($p -match '\\[AZzG]|\(\?<?[=!]') { [void]$pre.Add($null) }
        else { [void]$pre.Add((New-Object System.Text.RegularExpressions.Regex($p, $preFlags))) }
    }
    $opt['regex'] = $regex
    $opt['prefilter'] = $pre
    $files = New-Object System.Collections.ArrayList
    if (Get-ArgFlag $op 'rotated') {
        foreach ($s in (Get-RotatedSiblings $path)) { [void]$files.Add((Invoke-ScanFile $s $false $opt)) }
    }
    [void]$files.Add((Invoke-ScanFile $path $true $opt))
    $d = New-Map
    $d['files'] = $files
    return $d
}

# ------------------------------------------------------------------------------ products, services

function Get-NamePatterns($op) {
    # The op's `pattern` arguments as case-insensitive wildcards (products.list, products.patches).
    # Only * and ? are wildcards: escape the brackets WildcardPattern would also interpret.
    $pats = New-Object System.Collections.ArrayList
    foreach ($p in (Get-ArgTexts $op 'pattern')) {
        $escaped = $p.Replace('`', '``').Replace('[', '`[').Replace(']', '`]')
        [void]$pats.Add((New-Object System.Management.Automation.WildcardPattern($escaped, [System.Management.Automation.WildcardOptions]::IgnoreCase)))
    }
    return ,$pats  # the comma keeps PowerShell from unrolling the list (an empty one would become $null)
}

function Test-NameMatch($pats, [string]$name) {
    # True when no pattern was given or one of them matches `name`.
    if ($pats.Count -eq 0) { return $true }
    foreach ($wp in $pats) { if ($wp.IsMatch($name)) { return $true } }
    return $false
}

function Invoke-ProductsList($op, $ctx) {
    $pats = Get-NamePatterns $op
    $parts = Split-RegKey 'HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall'
    $views = @('64', '32')
    if (-not (Test-Os64)) { $views = @('32') }  # an x86 OS has one view: do not list it twice
    $products = New-Object System.Collections.ArrayList
    foreach ($vn in $views) {
        $opened = Open-RegView $parts $vn
        $key = $opened['key']
        if ($null -eq $key) { continue }
        try {
            foreach ($subName in $key.GetSubKeyNames()) {
                $sub = $key.OpenSubKey($subName, $false)
                if ($null -eq $sub) { continue }
                try {
                    $name = [string]$sub.GetValue('DisplayName', $null)
                    if ($name.Length -eq 0) { continue }
                    if (-not (Test-NameMatch $pats $name)) { continue }
                    $pr = New-Map
                    $pr['name'] = $name
                    $pr['version'] = $sub.GetValue('DisplayVersion', $null)
                    $pr['publisher'] = $sub.GetValue('Publisher', $null)
                    $pr['product_code'] = $subName
                    $pr['view'] = $vn
                    $pr['install_date'] = $sub.GetValue('InstallDate', $null)
                    foreach ($f in @('version', 'publisher', 'install_date')) { if ($null -ne $pr[$f]) { $pr[$f] = [string]$pr[$f] } }
                    [void]$products.Add($pr)
                } finally { $sub.Close() }
            }
        } finally { $key.Close() }
    }
    $d = New-Map
    $d['products'] = $products
    return $d
}

function Invoke-ProductsPatches($op, $ctx) {
    # Windows Installer patch registrations of per-machine products: HKLM\SOFTWARE\Microsoft\Windows\
    # CurrentVersion\Installer\UserData\S-1-5-18\Products\<packed product code>\Patches\<packed patch
    # code>, values DisplayName and State (1 applied, 2 superseded, 4 obsoleted) - what Installer.
    # PatchesEx / Patch.PatchProperty report (MS docs "Patch.PatchProperty method"). The key is not
    # redirected by WOW64, so the native (64) view is read.
    $pats = Get-NamePatterns $op
    $parts = Split-RegKey 'HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Installer\UserData\S-1-5-18\Products'
    $view = '64'
    if (-not (Test-Os64)) { $view = '32' }
    $patches = New-Object System.Collections.ArrayList
    $opened = Open-RegView $parts $view
    $key = $opened['key']
    if ($null -ne $key) {
        try {
            foreach ($prodName in $key.GetSubKeyNames()) {
                $pk = $key.OpenSubKey($prodName + '\Patches', $false)
                if ($null -eq $pk) { continue }
                try {
                    foreach ($patchName in $pk.GetSubKeyNames()) {
                        $sub = $pk.OpenSubKey($patchName, $false)
                        if ($null -eq $sub) { continue }
                        try {
                            $name = [string]$sub.GetValue('DisplayName', $null)
                            if ($name.Length -eq 0) { continue }
                            if (-not (Test-NameMatch $pats $name)) { continue }
                            $pr = New-Map
                            $pr['name'] = $name
                            $st = $sub.GetValue('State', $null)
                            if ($st -is [int]) { $pr['state'] = [long]$st } else { $pr['state'] = $null }
                            $pr['product_code'] = $prodName
                            $pr['patch_code'] = $patchName
                            $inst = $sub.GetValue('Installed', $null)
                            if ($null -ne $inst) { $pr['installed'] = [string]$inst } else { $pr['installed'] = $null }
                            [void]$patches.Add($pr)
                        } finally { $sub.Close() }
                    }
                } finally { $pk.Close() }
            }
        } finally { $key.Close() }
    }
    $d = New-Map
    $d['patches'] = $patches
    return $d
}

function Get-StartModes {
    $modes = @{}
    try {
        foreach ($s in (Get-WmiObject -Class Win32_Service)) { $modes[[string]$s.Name] = [string]$s.StartMode }
    } catch { }
    return $modes
}

function Get-ServiceState($sc) {
    # The status text, or $null when there is no such service (the getter throws
    # InvalidOperationException, which PowerShell wraps: catch everything here).
    try { $sc.Refresh(); return [string]$sc.Status } catch { return $null }
}

function Invoke-ServiceStatus($op, $ctx) {
    $modes = Get-StartModes
    $out = New-Map
    foreach ($name in (Get-ArgTexts $op 'name')) {
        $s = New-Map
        $s['exists'] = $false; $s['status'] = $null; $s['start_mode'] = $null
        $sc = New-Object System.ServiceProcess.ServiceController($name)
        try {
            $status = Get-ServiceState $sc
            if ($null -ne $status) {
                $s['exists'] = $true
                $s['status'] = $status
                foreach ($k in $modes.Keys) { if ($k -ieq $sc.ServiceName) { $s['start_mode'] = $modes[$k] } }
            }
        } finally { $sc.Close() }
        $out[$name] = $s
    }
    $d = New-Map
    $d['services'] = $out
    return $d
}

# ------------------------------------------------------------------------------ WSUS admin API

function Get-WsusServer([bool]$required) {
    # WSUS 3.0 administration API (Microsoft.UpdateServices.Administration, AdminProxy.GetUpdateServer()).
    $asm = [System.Reflection.Assembly]::LoadWithPartialName('Microsoft.UpdateServices.Administration')
    if ($null -eq $asm) {
        if ($required) { Stop-Op 'not_found' 'the WSUS administration API (Microsoft.UpdateServices.Administration) is not installed' }
        return $null
    }
    return [Microsoft.UpdateServices.Administration.AdminProxy]::getUpdateServer()
}

function Get-Approvals($update) {
    $list = New-Object System.Collections.ArrayList
    foreach ($a in $update.GetUpdateApprovals()) {
        $ap = New-Map
        $ap['group'] = [string]$a.GetComputerTargetGroup().Name
        $ap['action'] = [string]$a.Action
        [void]$list.Add($ap)
    }
    return ,$list
}

function Test-WsusReplica($server) {
    # IUpdateServerConfiguration.IsReplicaServer: a replica has its upstream's approvals and declined
    # status, and IUpdate.Approve/Decline throw InvalidOperationException on it (WSUS API reference).
    try { return [bool]$server.GetConfiguration().IsReplicaServer } catch { return $false }
}

function New-WsusUpdateEntry($u) {
    $e = New-Map
    $e['id'] = $u.Id.UpdateId.ToString()
    $e['title'] = [string]$u.Title
    $e['declined'] = [bool]$u.IsDeclined
    $e['approvals'] = Get-Approvals $u
    $e['requires_license'] = [bool]$u.RequiresLicenseAgreementAcceptance
    return $e
}

function Find-WsusUpdates($server, [string]$title) {
    # GetUpdates(UpdateScope) with ApprovedStates Any: a declined update (the normal state of the
    # one the KB954960 workaround handles) is included ("Displaying Available Updates", UpdateScope.
    # ApprovedStates defaults to Any). SearchUpdates' documentation does not say whether declined
    # updates are returned, so it is not used. Every exact title match is kept, not only the first.
    $scope = New-Object Microsoft.UpdateServices.Administration.UpdateScope
    $scope.ApprovedStates = [Microsoft.UpdateServices.Administration.ApprovedStates]::Any
    $scope.TextIncludes = $title
    $list = New-Object System.Collections.ArrayList
    foreach ($u in $server.GetUpdates($scope)) { if ([string]$u.Title -ieq $title) { [void]$list.Add($u) } }
    return ,$list
}

function Invoke-WsusFind($op, $ctx) {
    $title = Get-ArgText $op 'title' ''
    $d = New-Map
    $updates = New-Object System.Collections.ArrayList
    $server = Get-WsusServer $false
    $d['available'] = ($null -ne $server)
    $d['replica'] = $false
    $d['updates'] = $updates
    if ($null -eq $server) { return $d }
    $d['replica'] = Test-WsusReplica $server
    foreach ($u in (Find-WsusUpdates $server $title)) { [void]$updates.Add((New-WsusUpdateEntry $u)) }
    return $d
}

# ============================================================================== sent only with ops: host.environment
# ------------------------------------------------------------------------------ host.environment
# Read-only facts `kbfix doctor` needs before a check can be trusted (issue 17). Self-contained:
# reads only process facts and documented registry values, each in its own guard so one
# unreadable fact answers null instead of failing the op. Sources: PowerShell engine key and
# .NET "NET Framework Setup\NDP" keys (MS docs "How to determine which .NET Framework versions
# are installed"); code pages HKLM\SYSTEM\CurrentControlSet\Control\Nls\CodePage ACP/OEMCP;
# FIPS policy Lsa\FIPSAlgorithmPolicy (XP/2003) and Lsa\FipsAlgorithmPolicy\Enabled (Vista+)
# (MS docs "System cryptography: Use FIPS compliant algorithms ..."); UAC remote restrictions
# Policies\System\LocalAccountTokenFilterPolicy (KB951016).

function Get-EnvRegValue([string]$sub, [string]$name) {
    $k = $null
    try {
        $k = [Microsoft.Win32.Registry]::LocalMachine.OpenSubKey($sub)
        if ($null -eq $k) { return $null }
        return $k.GetValue($name)
    } catch { return $null } finally { if ($null -ne $k) { $k.Close() } }
}

function Get-DotNetVersions {
    $out = New-Object System.Collections.ArrayList
    $ndp = $null
    try {
        $ndp = [Microsoft.Win32.Registry]::LocalMachine.OpenSubKey('SOFTWARE\Microsoft\NET Framework Setup\NDP')
        if ($null -eq $ndp) { return ,$out }
        foreach ($name in $ndp.GetSubKeyNames()) {
            if (-not $name.StartsWith('v')) { continue }
            $sub = 'SOFTWARE\Microsoft\NET Framework Setup\NDP\' + $name
            $inst = Get-EnvRegValue $sub 'Install'
            if ($null -eq $inst) { $inst = Get-EnvRegValue ($sub + '\Full') 'Install' }
            if ($null -ne $inst -and [int]$inst -eq 1) { [void]$out.Add($name.Substring(1)) }
        }
    } catch { } finally { if ($null -ne $ndp) { $ndp.Close() } }
    return ,$out
}

function Invoke-HostEnvironment($op, $ctx) {
    $d = New-Map
    $psv = $PSVersionTable.PSVersion
    $d['ps_version'] = ('{0}.{1}' -f $psv.Major, $psv.Minor)
    $d['clr_version'] = [Environment]::Version.ToString()
    $d['dotnet'] = Get-DotNetVersions
    $d['culture'] = [Globalization.CultureInfo]::CurrentCulture.Name
    $d['os_language'] = [Globalization.CultureInfo]::InstalledUICulture.Name
    $nls = 'SYSTEM\CurrentControlSet\Control\Nls\CodePage'
    $acp = Get-EnvRegValue $nls 'ACP'
    $oem = Get-EnvRegValue $nls 'OEMCP'
    $d['ansi_codepage'] = $null
    $d['oem_codepage'] = $null
    if ($null -ne $acp) { $d['ansi_codepage'] = [int]$acp } else { $d['ansi_codepage'] = [Text.Encoding]::Default.CodePage }
    if ($null -ne $oem) { $d['oem_codepage'] = [int]$oem }
    $d['process_64bit'] = ([IntPtr]::Size -eq 8)
    $d['os_64bit'] = (Test-Os64)
    $fips = Get-EnvRegValue 'SYSTEM\CurrentControlSet\Control\Lsa\FipsAlgorithmPolicy' 'Enabled'
    if ($null -eq $fips) { $fips = Get-EnvRegValue 'SYSTEM\CurrentControlSet\Control\Lsa' 'FIPSAlgorithmPolicy' }
    $d['fips_policy'] = ($null -ne $fips -and [int]$fips -ne 0)
    $id = [Security.Principal.WindowsIdentity]::GetCurrent()
    $principal = New-Object Security.Principal.WindowsPrincipal($id)
    $d['user'] = $id.Name
    $d['elevated'] = $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
    $domain = $id.Name.Split([char[]]'\')[0]
    $d['local_account'] = ($domain -ieq [Environment]::MachineName)
    $latfp = Get-EnvRegValue 'SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System' 'LocalAccountTokenFilterPolicy'
    $d['local_account_token_filter_policy'] = $null
    if ($null -ne $latfp) { $d['local_account_token_filter_policy'] = [int]$latfp }
    return $d
}

# ============================================================================== end of section

# ------------------------------------------------------------------------------ reboots

function Get-LastBootUtc {
    # Win32_OperatingSystem.LastBootUpTime (CIM datetime, local time with UTC offset; MS docs
    # "Win32_OperatingSystem class"), as ISO-8601 UTC. Get-WmiObject exists in PowerShell 2.0.
    $os = Get-WmiObject -Class Win32_OperatingSystem
    $t = [System.Management.ManagementDateTimeConverter]::ToDateTime([string]$os.LastBootUpTime)
    return $t.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ', $inv)
}

function Test-RegKey([string]$key) {
    $opened = Open-RegView (Split-RegKey $key) '64'
    if ($null -eq $opened['key']) { return $false }
    $opened['key'].Close()
    return $true
}

function Invoke-RebootState($op, $ctx) {
    # The documented pending-reboot indicators (remoting/PROTOCOL.md, "system.reboot_state"):
    # CBS RebootPending (Vista/2008 and later), Windows Update RebootRequired, and Session
    # Manager PendingFileRenameOperations (what MoveFileEx MOVEFILE_DELAY_UNTIL_REBOOT writes).
    $d = New-Map
    $d['cbs_reboot_pending'] = Test-RegKey 'HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending'
    $d['wu_reboot_required'] = Test-RegKey 'HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired'
    $renames = New-Object System.Collections.ArrayList
    $count = 0
    $opened = Open-RegView (Split-RegKey 'HKLM\SYSTEM\CurrentControlSet\Control\Session Manager') '64'
    if ($null -ne $opened['key']) {
        try {
            $raw = $opened['key'].GetValue('PendingFileRenameOperations', $null)
            if ($null -ne $raw) {
                foreach ($s in @($raw)) {
                    $count++
                    if ($renames.Count -lt 64) { [void]$renames.Add([string]$s) }
                }
            }
        } finally { $opened['key'].Close() }
    }
    $d['pending_file_renames'] = $renames
    $d['pending_file_renames_count'] = $count
    $d['last_boot'] = $null
    $d['last_boot_error'] = $null
    try { $d['last_boot'] = Get-LastBootUtc } catch { $d['last_boot_error'] = [string]$_.Exception.Message }
    return $d
}

# ============================================================================== sent only with ops: mutating
# From here to `end of section`: the functions only the mutating ops (remoting/ops.py) call. A
# request that names none of them travels with the agent without this section
# (remoting/agent_protocol.py `agent_for_ops`): smaller on the wire, and a check run's agent
# carries no code that changes a host. Nothing outside the section calls into it except the
# dispatch arms of its ops in Invoke-Op (tests/test_agent_ps1_syntax.py checks both).

function Wait-ServiceStatus($sc, [string]$want, [string]$name) {
    $limit = New-Object System.TimeSpan(0, 2, 0)
    try { $sc.WaitForStatus([System.ServiceProcess.ServiceControllerStatus]$want, $limit) }
    catch { Stop-Op 'timeout' ($name + ' did not reach ' + $want + ' within 120 s') }
}

function Invoke-ServiceRestart($op, $ctx) {
    $name = Get-ArgText $op 'name' ''
    $sc = New-Object System.ServiceProcess.ServiceController($name)
    try {
        $status = Get-ServiceState $sc
        if ($null -eq $status) { Stop-Op 'not_found' ('no service named ' + $name) }
        if ($status -ne 'Stopped') {
            $sc.Stop()  # also stops the services that depend on it (ServiceController.Stop)
            Wait-ServiceStatus $sc 'Stopped' $name
        }
        $sc.Start()
        Wait-ServiceStatus $sc 'Running' $name
        $d = New-Map
        $d['status'] = Get-ServiceState $sc
        return $d
    } finally { $sc.Close() }
}

function Get-WsusUpdate($server, [string]$id) {
    $g = $null
    try { $g = New-Object System.Guid($id) } catch { Stop-Op 'invalid_args' "argument 'id' is not a GUID" }
    try { return $server.GetUpdate((New-Object Microsoft.UpdateServices.Administration.UpdateRevisionId($g))) }
    catch { Stop-Op 'not_found' ('no update with id ' + $id + ' on this WSUS server') }
}

function Invoke-WsusDecline($op, $ctx) {
    $server = Get-WsusServer $true
    $id = Get-ArgText $op 'id' ''
    $u = Get-WsusUpdate $server $id
    $u.Decline()  # "Declining an update removes all approvals for all revisions of the update."
    $d = New-Map
    $d['id'] = $id
    $d['declined'] = $true
    return $d
}

function Get-ApprovalAction([string]$actionName) {
    # WSUS 3.0 approval actions a client can be given: Install, Uninstall, NotApproved
    # (UpdateApprovalAction; All only queries).
    foreach ($a in @('Install', 'Uninstall', 'NotApproved')) {
        if ($a -ieq $actionName) { return [Enum]::Parse([Type]'Microsoft.UpdateServices.Administration.UpdateApprovalAction', $a) }
    }
    Stop-Op 'invalid_args' ('unknown approval action ' + $actionName + ' (WSUS 3.0 accepts Install, Uninstall, NotApproved)')
}

function Get-TargetGroup($server, [string]$groupName) {
    $group = $null
    if ($groupName -ieq 'All Computers') {
        # by id: the group's display name is localized on localized WSUS servers
        $group = $server.GetComputerTargetGroup([Microsoft.UpdateServices.Administration.ComputerTargetGroupId]::AllComputers)
    } else {
        foreach ($g in $server.GetComputerTargetGroups()) { if ([string]$g.Name -ieq $groupName) { $group = $g; break } }
    }
    if ($null -eq $group) { Stop-Op 'not_found' ('no computer group named ' + $groupName) }
    return $group
}

function Invoke-WsusApprove($op, $ctx) {
    $server = Get-WsusServer $true
    $id = Get-ArgText $op 'id' ''
    $action = Get-ApprovalAction (Get-ArgText $op 'action' 'Install')
    $group = Get-TargetGroup $server (Get-ArgText $op 'group' 'All Computers')
    $u = Get-WsusUpdate $server $id
    [void]$u.Approve($action, $group)
    $u.Refresh()
    $d = New-Map
    $d['id'] = $id
    $d['approvals'] = Get-Approvals $u
    return $d
}

function Invoke-WsusWorkaround($op, $ctx) {
    # The KB954960 workaround for WSUS 3.0 RTM, in one op: per update, decline (if needed) ->
    # Approve(NotApproved, All Computers) (the console's Approve dialog accepted with no changes) ->
    # Decline in a finally, so the update always ends declined even when a step throws.
    # Refused before any change on a replica server and when a licence is not accepted.
    $server = Get-WsusServer $true
    if (Test-WsusReplica $server) { Stop-Op 'exception' 'this WSUS server is a replica (IsReplicaServer): run the workaround on its upstream server' }
    $group = Get-TargetGroup $server (Get-ArgText $op 'group' 'All Computers')
    $notApproved = Get-ApprovalAction 'NotApproved'
    $ups = New-Object System.Collections.ArrayList
    foreach ($id in (Get-ArgTexts $op 'id')) { [void]$ups.Add((Get-WsusUpdate $server $id)) }
    foreach ($u in $ups) {
        if ($u.RequiresLicenseAgreementAcceptance) {
            Stop-Op 'exception' ('the licence agreement of ' + [string]$u.Title + ' is not accepted (RequiresLicenseAgreementAcceptance): nothing was changed')
        }
    }
    $out = New-Object System.Collections.ArrayList
    foreach ($u in $ups) {
        $steps = New-Object System.Collections.ArrayList
        try {
            if (-not $u.IsDeclined) { $u.Decline(); [void]$steps.Add('decline') }
            [void]$u.Approve($notApproved, $group)
            [void]$steps.Add('approve NotApproved')
        } catch {
            $msg = [string]$_.Exception.Message
            Stop-Op 'exception' ($msg + ' (steps done on ' + $u.Id.UpdateId.ToString() + ': ' + [string]::Join(', ', [string[]]$steps.ToArray()) + ')')
        } finally {
            $u.Decline()
            [void]$steps.Add('decline')
        }
        $u.Refresh()
        $e = New-WsusUpdateEntry $u
        $e['steps'] = $steps
        [void]$out.Add($e)
    }
    $d = New-Map
    $d['updates'] = $out
    return $d
}

function Invoke-FileUpload($op, $ctx) {
    $path = Get-PathArg $op 'path' $ctx
    $data = Get-ArgBytes $op 'data'
    if ($null -eq $data) { $data = New-Object byte[] 0 }
    $offset = Get-ArgLong $op 'offset' 0 0 ([long]::MaxValue)
    $dir = [System.IO.Path]::GetDirectoryName($path)
    if ($null -ne $dir -and $dir.Length -gt 0) { [void][System.IO.Directory]::CreateDirectory($dir) }
    if ($offset -eq 0) {
        $fs = New-Object System.IO.FileStream($path, [System.IO.FileMode]::Create, [System.IO.FileAccess]::Write, [System.IO.FileShare]::None)
    } else {
        if (-not [System.IO.File]::Exists($path)) { Stop-Op 'invalid_args' ('offset ' + $offset + ' given but ' + $path + ' does not exist') }
        $fs = New-Object System.IO.FileStream($path, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Write, [System.IO.FileShare]::None)
    }
    try {
        if ($fs.Length -ne $offset) { Stop-Op 'invalid_args' ('offset ' + $offset + ' does not match the current size ' + $fs.Length) }
        [void]$fs.Seek($offset, [System.IO.SeekOrigin]::Begin)
        $fs.Write($data, 0, $data.Length)
        $fs.Flush()
        $size = [long]$fs.Length
    } finally { $fs.Close() }
    $d = New-Map
    $d['path'] = $path
    $d['size'] = $size
    return $d
}

function ConvertTo-CommandLineArg([string]$a) {
    # Quote for CommandLineToArgvW / the MSVC runtime: backslashes before a quote are doubled.
    if ($a.Length -gt 0 -and $a -notmatch '[\s"]') { return $a }
    $sb = New-Object System.Text.StringBuilder
    [void]$sb.Append('"')
    $bsChar = [char]92  # backslash; StringBuilder.Append(char, repeatCount)
    $bs = 0
    foreach ($ch in $a.ToCharArray()) {
        if ($ch -eq $bsChar) { $bs++; continue }
        if ($ch -eq '"') { [void]$sb.Append($bsChar, 2 * $bs + 1); $bs = 0; [void]$sb.Append('"'); continue }
        if ($bs -gt 0) { [void]$sb.Append($bsChar, $bs); $bs = 0 }
        [void]$sb.Append($ch)
    }
    if ($bs -gt 0) { [void]$sb.Append($bsChar, 2 * $bs) }
    [void]$sb.Append('"')
    return $sb.ToString()
}

function Read-LogTail([string]$path, [int]$maxBytes) {
    if (-not [System.IO.File]::Exists($path)) { return $null }
    $fs = Open-Shared $path
    try {
        $det = Get-LogEncoding $fs
        $size = $fs.Length
        $start = [Math]::Max([long]$det['bom'], $size - $maxBytes)
        if ($det['unit'] -eq 2 -and (($start - $det['bom']) % 2) -ne 0) { $start++ }
        $len = [int]($size - $start)
        $buf = New-Object byte[] $len
        [void]$fs.Seek($start, [System.IO.SeekOrigin]::Begin)
        $n = 0
        while ($n -lt $len) { $got = $fs.Read($buf, $n, $len - $n); if ($got -le 0) { break }; $n += $got }
        return $det['enc'].GetString($buf, 0, $n)
    } finally { $fs.Close() }
}

function Invoke-InstallerRun($op, $ctx) {
    $path = Get-PathArg $op 'path' $ctx
    if (-not [System.IO.File]::Exists($path)) { Stop-Op 'not_found' ('installer not found: ' + $path) }
    $expected = (Get-ArgText $op 'sha256' '').Trim().ToLowerInvariant()
    $actual = Get-Sha256Hex $path
    if ($actual -ne $expected) { Stop-Op 'hash_mismatch' ('SHA-256 of ' + $path + ' is ' + $actual + ', expected ' + $expected + '; nothing was run') }
    $success = New-Object System.Collections.ArrayList
    $reboot = New-Object System.Collections.ArrayList
    foreach ($c in (Get-ArgTexts $op 'success_codes')) { [void]$success.Add([long]::Parse($c.Trim(), $inv)) }
    foreach ($c in (Get-ArgTexts $op 'reboot_codes')) { [void]$reboot.Add([long]::Parse($c.Trim(), $inv)) }
    if ($success.Count -eq 0) { [void]$success.Add([long]0) }
    # 3010 ERROR_SUCCESS_REBOOT_REQUIRED, 1641 ERROR_SUCCESS_REBOOT_INITIATED (Windows Installer docs)
    if ($reboot.Count -eq 0) { [void]$reboot.Add([long]3010); [void]$reboot.Add([long]1641) }
    $timeout = Get-ArgLong $op 'timeout' 1800 1 86400
    $logPath = $null
    if ($op['args'].ContainsKey('log_path')) { $logPath = Get-PathArg $op 'log_path' $ctx }
    $argv = New-Object System.Collections.ArrayList
    $ext = [System.IO.Path]::GetExtension($path).ToLowerInvariant()
    if ($ext -eq '.msp' -or $ext -eq '.msi') {
        $exe = [System.IO.Path]::Combine([Environment]::SystemDirectory, 'msiexec.exe')
        if ($ext -eq '.msp') { [void]$argv.Add('/p') } else { [void]$argv.Add('/i') }
        [void]$argv.Add((ConvertTo-CommandLineArg $path))
    } else { $exe = $path }
    foreach ($a in (Get-ArgTexts $op 'arg')) { [void]$argv.Add((ConvertTo-CommandLineArg $a)) }
    # A previous attempt's log must never be filed as this run's evidence: delete it first, and
    # return a tail only when the log was written after this start.
    if ($null -ne $logPath -and [System.IO.File]::Exists($logPath)) { [System.IO.File]::Delete($logPath) }
    $psi = New-Object System.Diagnostics.ProcessStartInfo
    $psi.FileName = $exe
    $psi.Arguments = [string]::Join(' ', [string[]]$argv.ToArray())
    # ShellExecute: the installer does not inherit this process's handles, so it never holds
    # WinRM's stdout/stderr pipes open (which would keep the command running after it exits).
    $psi.UseShellExecute = $true
    $psi.WindowStyle = [System.Diagnostics.ProcessWindowStyle]::Hidden
    $started = [DateTime]::UtcNow.AddSeconds(-2)  # file times are coarse: a log written at the start still counts
    $watch = [System.Diagnostics.Stopwatch]::StartNew()
    $proc = [System.Diagnostics.Process]::Start($psi)
    if (-not $proc.WaitForExit([int]($timeout * 1000))) {
        # End the whole tree (msiexec hands the work to child processes): taskkill /T /F.
        $tk = [System.IO.Path]::Combine([Environment]::SystemDirectory, 'taskkill.exe')
        $kill = New-Object System.Diagnostics.ProcessStartInfo
        $kill.FileName = $tk
        $kill.Arguments = '/PID ' + $proc.Id.ToString($inv) + ' /T /F'
        $kill.UseShellExecute = $true
        $kill.WindowStyle = [System.Diagnostics.ProcessWindowStyle]::Hidden
        $how = 'its process tree was ended (taskkill /T /F)'
        try {
            $k = [System.Diagnostics.Process]::Start($kill)
            if (-not $k.WaitForExit(30000) -or $k.ExitCode -ne 0) { try { $proc.Kill() } catch { }; $how = 'taskkill failed; the installer process was ended, its children may still run' }
        } catch { try { $proc.Kill() } catch { }; $how = 'taskkill could not start; the installer process was ended, its children may still run' }
        Stop-Op 'timeout' ('installer still running after ' + $timeout + ' s; ' + $how)
    }
    $code = [long]$proc.ExitCode
    $d = New-Map
    $d['exit_code'] = $code
    $outcome = 'failed'
    if ($success.Contains($code)) { $outcome = 'success' } elseif ($reboot.Contains($code)) { $outcome = 'reboot_required' }
    $d['outcome'] = $outcome
    $d['seconds'] = [double]$watch.Elapsed.TotalSeconds
    $d['log_tail'] = $null
    if ($null -ne $logPath) {
        $lfi = New-Object System.IO.FileInfo($logPath)
        if ($lfi.Exists -and $lfi.LastWriteTimeUtc -ge $started) { $d['log_tail'] = Read-LogTail $logPath 65536 }
    }
    return $d
}

function Invoke-Reboot($op, $ctx) {
    # shutdown.exe /r /t N /c "comment" /d p:2:17 (restart, planned, Operating System: Hot fix):
    # documented on Server 2003 (/t 0-600, /c at most 127 characters) and later. It returns at
    # once; the restart follows after N seconds, so this answer still reaches the client.
    $delay = Get-ArgLong $op 'delay' 2 0 600
    $msg = Get-ArgText $op 'message' 'Reboot initiated by kbfix'
    if ($msg.Length -gt 127 -or $msg -match '["\x00-\x1f]') { Stop-Op 'invalid_args' 'message: at most 127 printable characters, no double quote' }
    $before = $null
    try { $before = Get-LastBootUtc } catch { }
    $psi = New-Object System.Diagnostics.ProcessStartInfo
    $psi.FileName = [System.IO.Path]::Combine([Environment]::SystemDirectory, 'shutdown.exe')
    $psi.Arguments = '/r /t ' + $delay.ToString($inv) + ' /c ' + (ConvertTo-CommandLineArg $msg) + ' /d p:2:17'
    $psi.UseShellExecute = $true
    $psi.WindowStyle = [System.Diagnostics.ProcessWindowStyle]::Hidden
    $requested = [DateTime]::UtcNow.ToString('yyyy-MM-ddTHH:mm:ssZ', $inv)
    $proc = [System.Diagnostics.Process]::Start($psi)
    if (-not $proc.WaitForExit(30000)) { Stop-Op 'timeout' 'shutdown.exe did not return within 30 s' }
    # 1190 ERROR_SHUTDOWN_IS_SCHEDULED: a restart is already scheduled and will still happen.
    if ($proc.ExitCode -ne 0 -and $proc.ExitCode -ne 1190) { Stop-Op 'exception' ('shutdown.exe exited with ' + $proc.ExitCode.ToString($inv) + '; no restart was scheduled') }
    $d = New-Map
    $d['requested'] = $requested
    $d['delay'] = $delay
    $d['last_boot'] = $before
    $d['exit_code'] = [long]$proc.ExitCode
    return $d
}

# ============================================================================== end of section

# ------------------------------------------------------------------------------ dispatch

function Invoke-Op($op, $ctx) {
    $r = New-Map
    $r['id'] = $op['id']
    $r['op'] = $op['name']
    try {
        if ($null -ne $op['bad']) { Stop-Op 'invalid_args' $op['bad'] }
        if (-not $opRequired.ContainsKey($op['name'])) { Stop-Op 'invalid_args' ('unknown op ' + $op['name']) }
        foreach ($req in $opRequired[$op['name']]) {
            if (-not $op['args'].ContainsKey($req)) { Stop-Op 'invalid_args' ("missing required argument '" + $req + "'") }
        }
        switch ($op['name']) {
            'env.expand' { $d = New-Map; $d['value'] = [Environment]::ExpandEnvironmentVariables((Get-ArgText $op 'text' '')); $data = $d }
            'registry.values' { $data = Invoke-RegistryValues $op $ctx }
            'file.info' { $data = Invoke-FileInfo $op $ctx }
            'log.scan' { $data = Invoke-LogScan $op $ctx }
            'products.list' { $data = Invoke-ProductsList $op $ctx }
            'service.status' { $data = Invoke-ServiceStatus $op $ctx }
            'wsus.find_update' { $data = Invoke-WsusFind $op $ctx }
            'file.upload' { $data = Invoke-FileUpload $op $ctx }
            'installer.run' { $data = Invoke-InstallerRun $op $ctx }
            'service.restart' { $data = Invoke-ServiceRestart $op $ctx }
            'wsus.decline_update' { $data = Invoke-WsusDecline $op $ctx }
            'wsus.approve_update' { $data = Invoke-WsusApprove $op $ctx }
            'wsus.workaround' { $data = Invoke-WsusWorkaround $op $ctx }
            'products.patches' { $data = Invoke-ProductsPatches $op $ctx }
            'system.reboot_state' { $data = Invoke-RebootState $op $ctx }
            'system.reboot' { $data = Invoke-Reboot $op $ctx }
            'host.environment' { $data = Invoke-HostEnvironment $op $ctx }
        }
        $r['ok'] = $true
        $r['data'] = $data
    } catch {
        $r['ok'] = $false
        $r['error'] = Get-OpError $_
    }
    return $r
}

function New-LimitResult($op, [long]$limit, [bool]$ran) {
    $r = New-Map
    $r['id'] = $op['id']; $r['op'] = $op['name']; $r['ok'] = $false
    $e = New-Map
    $what = 'op not run'
    if ($ran) { $what = 'the op ran but its result was dropped' }
    $e['kind'] = 'limit'; $e['message'] = 'response limit of ' + $limit + ' bytes reached; ' + $what; $e['hresult'] = $null
    $r['error'] = $e
    return $r
}

function Write-Base64Piece($ms, $gz, [string]$text, [bool]$final) {
    # Streams the response: the UTF-8 bytes of `text` go through the GZipStream `gz` (.NET 2.0;
    # PROTOCOL.md "Response": the document travels gzip'd), which appends compressed bytes to `ms`,
    # and every whole group of 57 of them leaves at once as one 76-character base64 line (the
    # same lines as encoding the whole compressed document), so the agent never holds the
    # document, its base64 and the framed copy at once: WinRM 2.0's MaxMemoryPerShellMB (150 MB by
    # default) covers the agent and everything it starts. `final` closes `gz` (its last block and
    # the gzip trailer; `ms` stays open) and flushes the last, shorter line.
    if ($text.Length -gt 0) { $bytes = $utf8.GetBytes($text); $gz.Write($bytes, 0, $bytes.Length) }
    if ($final) { $gz.Close() }
    $buf = $ms.GetBuffer()
    $len = [int]$ms.Length
    $whole = $len - ($len % 57)
    if ($final) { $whole = $len }
    if ($whole -eq 0) { return }
    $sb = New-Object System.Text.StringBuilder
    for ($pos = 0; $pos -lt $whole; $pos += 57) {
        [void]$sb.Append([Convert]::ToBase64String($buf, $pos, [Math]::Min(57, $whole - $pos)))
        [void]$sb.Append("`r`n")
    }
    [Console]::Out.Write($sb.ToString())
    $rest = $len - $whole
    if ($rest -gt 0) { [Array]::Copy($buf, $whole, $buf, 0, $rest) }
    $ms.SetLength($rest)
    $ms.Position = $rest  # SetLength does not move the position: the next Write appends here
}

# ------------------------------------------------------------------------------ main

try {
    $request = Read-Request $RequestText
} catch {
    [Console]::Error.WriteLine('kbfix agent: ' + $_.Exception.Message)
    $global:LASTEXITCODE = 1
    return
}
try {
    $ctx = @{ 'reg' = @{}; 'scans' = @{} }
    $limit = [long]$request['limit']
    $hostJson = ConvertTo-AgentJson (Get-HostInfo)
    # Fixed part of the document: {"protocol":1,"nonce":"...","host":...,"results":[...],"truncated":...,"elapsed_ms":...}
    $used = [long](120 + $utf8.GetByteCount($hostJson))
    $truncated = $false
    $ms = New-Object System.IO.MemoryStream
    $gz = New-Object System.IO.Compression.GZipStream($ms, [System.IO.Compression.CompressionMode]::Compress, $true)
    $head = New-Object System.Text.StringBuilder
    [void]$head.Append('{"protocol":1,"nonce":')
    Add-JsonString $head $request['nonce']
    [void]$head.Append(',"host":' + $hostJson + ',"results":[')
    [Console]::Out.Write('KBFIX-BEGIN-' + $request['nonce'] + "`r`n")
    Write-Base64Piece $ms $gz $head.ToString() $false
    $first = $true
    foreach ($op in $request['ops']) {
        if ($truncated) { $json = ConvertTo-AgentJson (New-LimitResult $op $limit $false) }
        else {
            $json = ConvertTo-AgentJson (Invoke-Op $op $ctx)
            if ($used + $utf8.GetByteCount($json) + 1 -gt $limit) {
                $truncated = $true
                $json = ConvertTo-AgentJson (New-LimitResult $op $limit $true)
            }
        }
        $used += $utf8.GetByteCount($json) + 1
        if (-not $first) { $json = ',' + $json }
        $first = $false
        Write-Base64Piece $ms $gz $json $false  # each result leaves as soon as it is known
        $json = $null
    }
    $elapsed = [long]([DateTime]::UtcNow - $agentStarted).TotalMilliseconds
    $tail = '],"truncated":false'
    if ($truncated) { $tail = '],"truncated":true' }
    Write-Base64Piece $ms $gz ($tail + ',"elapsed_ms":' + $elapsed.ToString($inv) + '}') $true
    [Console]::Out.Write('KBFIX-END-' + $request['nonce'] + "`r`n")
    [Console]::Out.Flush()
    $global:LASTEXITCODE = 0
} catch {
    [Console]::Error.WriteLine('kbfix agent: ' + $_.Exception.Message)
    $global:LASTEXITCODE = 1
}
