; Mirage for Windows: the tray app and the helper service.
; makensis -DVERSION=x.y.z -DBUILD=dir -DOUT=file packaging/windows/mirage.nsi
; BUILD holds mirage.exe (tray app) and mirage-helper.exe. wintun.dll is
; not bundled (this build cannot fetch it): put the signed wintun.dll from
; https://www.wintun.net/ (bin\amd64) next to mirage-helper.exe; the helper
; names the file and the place when it is missing.
Unicode true
!include "MUI2.nsh"

Name "Mirage"
OutFile "${OUT}"
InstallDir "$PROGRAMFILES64\Mirage"
RequestExecutionLevel admin
SetCompressor /SOLID lzma

!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

Section "Mirage"
  SetOutPath "$INSTDIR"
  ; An upgrade: stop the old helper first (it disconnects and restores).
  IfFileExists "$INSTDIR\mirage-helper.exe" 0 +2
    nsExec::ExecToLog '"$INSTDIR\mirage-helper.exe" service stop'
  File "${BUILD}\mirage.exe"
  File "${BUILD}\mirage-helper.exe"
  File /nonfatal "${BUILD}\wintun.dll"
  WriteUninstaller "$INSTDIR\uninstall.exe"
  ; The helper as a service (SCM, restarts after a crash), started.
  nsExec::ExecToLog '"$INSTDIR\mirage-helper.exe" service install'
  nsExec::ExecToLog '"$INSTDIR\mirage-helper.exe" service start'
  CreateShortcut "$SMPROGRAMS\Mirage.lnk" "$INSTDIR\mirage.exe"
  ; mirage:// links open the tray app, which imports them.
  WriteRegStr HKCR "mirage" "" "URL:Mirage profile link"
  WriteRegStr HKCR "mirage" "URL Protocol" ""
  WriteRegStr HKCR "mirage\DefaultIcon" "" "$INSTDIR\mirage.exe,0"
  WriteRegStr HKCR "mirage\shell\open\command" "" '"$INSTDIR\mirage.exe" "%1"'
  WriteRegStr HKLM "Software\Microsoft\Windows\CurrentVersion\Uninstall\Mirage" "DisplayName" "Mirage"
  WriteRegStr HKLM "Software\Microsoft\Windows\CurrentVersion\Uninstall\Mirage" "DisplayVersion" "${VERSION}"
  WriteRegStr HKLM "Software\Microsoft\Windows\CurrentVersion\Uninstall\Mirage" "UninstallString" '"$INSTDIR\uninstall.exe"'
SectionEnd

Section "Uninstall"
  ; The helper disconnects and restores routes and DNS when stopped.
  nsExec::ExecToLog '"$INSTDIR\mirage-helper.exe" service stop'
  nsExec::ExecToLog '"$INSTDIR\mirage-helper.exe" service uninstall'
  nsExec::ExecToLog '"$INSTDIR\mirage-helper.exe" cleanup'
  Delete "$INSTDIR\mirage.exe"
  Delete "$INSTDIR\mirage-helper.exe"
  Delete "$INSTDIR\wintun.dll"
  Delete "$INSTDIR\uninstall.exe"
  RMDir "$INSTDIR"
  Delete "$SMPROGRAMS\Mirage.lnk"
  DeleteRegKey HKCR "mirage"
  DeleteRegKey HKLM "Software\Microsoft\Windows\CurrentVersion\Uninstall\Mirage"
SectionEnd
