package views

import (
	"context"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/widget"

	"github.com/mirage-vpn/mirage/gui/viewmodel"
)

// editor is the TOML edit dialog: a multi-line entry with the helper's
// validation error shown inline. It closes only after a successful save.
type editor struct {
	name  string
	entry *widget.Entry
	err   *widget.Label
	save  *widget.Button
	dlg   *dialog.CustomDialog
}

func (u *UI) showEditor() {
	name := u.selected()
	if name == "" {
		return
	}
	u.run(func(ctx context.Context) {
		text, err := u.vm.LoadTOML(ctx, name)
		if err != nil {
			return // the notice shows why
		}
		fyne.Do(func() { u.openEditor(name, text) })
	})
}

func (u *UI) openEditor(name, text string) {
	ed := &editor{name: name, entry: widget.NewMultiLineEntry(), err: widget.NewLabel("")}
	ed.entry.TextStyle = fyne.TextStyle{Monospace: true}
	ed.entry.SetText(text)
	ed.entry.SetMinRowsVisible(18)
	ed.err.Importance = widget.DangerImportance
	ed.err.Wrapping = fyne.TextWrapWord
	ed.err.Hide()
	cancel := widget.NewButton("Cancel", func() { ed.dlg.Hide(); u.editor = nil })
	ed.save = widget.NewButton("Save", func() { u.saveEditor(ed) })
	ed.save.Importance = widget.HighImportance
	body := container.NewBorder(nil, ed.err, nil, nil, ed.entry)
	ed.dlg = dialog.NewCustomWithoutButtons("Edit "+name, body, u.win)
	ed.dlg.SetButtons([]fyne.CanvasObject{cancel, ed.save})
	ed.dlg.Resize(fyne.NewSize(640, 480))
	u.editor = ed
	ed.dlg.Show()
}

func (u *UI) saveEditor(ed *editor) {
	text := ed.entry.Text
	ed.save.Disable()
	u.run(func(ctx context.Context) {
		err := u.vm.SaveTOML(ctx, ed.name, text)
		fyne.Do(func() {
			ed.save.Enable()
			if err != nil {
				ed.err.SetText(viewmodel.Message(err))
				ed.err.Show()
				return
			}
			ed.dlg.Hide()
			u.vm.ClearNotice()
			if u.editor == ed {
				u.editor = nil
			}
		})
	})
}
