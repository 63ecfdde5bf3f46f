package builtin

import (
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"time"

	"github.com/claimcheck/claimcheck/worker"
)

// MaxMandelbrotPixels bounds width × height (4096²): the image is held as
// one byte per pixel while it renders.
const MaxMandelbrotPixels = 4096 * 4096

// MandelbrotInput is the mandelbrot job's input; omitted fields take the
// defaults in the schema.
type MandelbrotInput struct {
	Width   int     `json:"width"`
	Height  int     `json:"height"`
	MaxIter int     `json:"max_iter"`
	XMin    float64 `json:"x_min"`
	XMax    float64 `json:"x_max"`
	YMin    float64 `json:"y_min"`
	YMax    float64 `json:"y_max"`
}

// Mandelbrot renders a region of the Mandelbrot set as a PNG.
func Mandelbrot() worker.Type {
	return worker.Type{
		Name:        "mandelbrot",
		Description: "Renders a region of the Mandelbrot set as a PNG image.",
		Timeout:     5 * time.Minute,
		MaxTimeout:  30 * time.Minute,
		MaxRetry:    3,
		ContentType: "image/png",
		InputSchema: json.RawMessage(`{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "width": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 640, "title": "Width", "description": "Image width in pixels."},
    "height": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 480, "title": "Height", "description": "Image height in pixels."},
    "max_iter": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 500, "title": "Iterations", "description": "Iterations before a point counts as inside the set."},
    "x_min": {"type": "number", "minimum": -4, "maximum": 4, "default": -2.5, "title": "Left", "description": "Real part at the left edge."},
    "x_max": {"type": "number", "minimum": -4, "maximum": 4, "default": 1.0, "title": "Right", "description": "Real part at the right edge."},
    "y_min": {"type": "number", "minimum": -4, "maximum": 4, "default": -1.25, "title": "Bottom", "description": "Imaginary part at the bottom edge."},
    "y_max": {"type": "number", "minimum": -4, "maximum": 4, "default": 1.25, "title": "Top", "description": "Imaginary part at the top edge."}
  }
}`),
		Handle: mandelbrot,
	}
}

func mandelbrot(ctx context.Context, t *worker.Task) error {
	in := MandelbrotInput{Width: 640, Height: 480, MaxIter: 500, XMin: -2.5, XMax: 1, YMin: -1.25, YMax: 1.25}
	if err := t.Decode(&in); err != nil {
		return err
	}
	img, err := RenderMandelbrot(ctx, in, func(done, total int) {
		t.Progress(100*float64(done)/float64(total), fmt.Sprintf("rows %d/%d", done, total))
	})
	if err != nil {
		return err
	}
	w, err := t.Result("image/png")
	if err != nil {
		return err
	}
	// The encoder writes compressed rows as it goes; the PNG is never held
	// whole in memory.
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	return enc.Encode(w, img)
}

// RenderMandelbrot renders in into a paletted image in bands of rows,
// calling onBand (if not nil) after each with rows done and total; at most
// about 50 calls. Points inside the set are black.
func RenderMandelbrot(ctx context.Context, in MandelbrotInput, onBand func(done, total int)) (*image.Paletted, error) {
	switch {
	case in.Width < 1 || in.Height < 1 || in.Width > 4096 || in.Height > 4096 || in.Width*in.Height > MaxMandelbrotPixels:
		return nil, fmt.Errorf("image %dx%d out of range: %w", in.Width, in.Height, worker.ErrPermanent)
	case in.MaxIter < 1 || in.MaxIter > 100000:
		return nil, fmt.Errorf("max_iter %d out of range: %w", in.MaxIter, worker.ErrPermanent)
	case !(in.XMin < in.XMax) || !(in.YMin < in.YMax):
		return nil, fmt.Errorf("region needs x_min < x_max and y_min < y_max: %w", worker.ErrPermanent)
	}
	img := image.NewPaletted(image.Rect(0, 0, in.Width, in.Height), palette)
	dx := (in.XMax - in.XMin) / float64(in.Width)
	dy := (in.YMax - in.YMin) / float64(in.Height)
	band := max(1, (in.Height+49)/50)
	for y0 := 0; y0 < in.Height; y0 += band {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("render stopped at row %d: %w", y0, err)
		}
		for py := y0; py < min(y0+band, in.Height); py++ {
			ci := in.YMax - (float64(py)+0.5)*dy
			row := img.Pix[py*img.Stride : py*img.Stride+in.Width]
			for px := range row {
				row[px] = colorIndex(in.XMin+(float64(px)+0.5)*dx, ci, in.MaxIter)
			}
		}
		if onBand != nil {
			onBand(min(y0+band, in.Height), in.Height)
		}
	}
	return img, nil
}

// colorIndex iterates z² + c and maps the smooth escape time to a palette
// index; 0 (black) means inside.
func colorIndex(cr, ci float64, maxIter int) uint8 {
	// Skip the main cardioid and the period-2 bulb: they are inside, and
	// would otherwise cost maxIter iterations per pixel.
	xq := cr - 0.25
	q := xq*xq + ci*ci
	if q*(q+xq) <= 0.25*ci*ci || (cr+1)*(cr+1)+ci*ci <= 1.0/16 {
		return 0
	}
	var zr, zi, zr2, zi2 float64
	for i := 0; i < maxIter; i++ {
		zi = 2*zr*zi + ci
		zr = zr2 - zi2 + cr
		zr2, zi2 = zr*zr, zi*zi
		if zr2+zi2 > 256 { // a large bailout makes the smooth count smooth
			nu := float64(i) + 1 - math.Log2(math.Log2(zr2+zi2)/2)
			return uint8(1 + int(math.Mod(math.Sqrt(max(nu, 0))*32, 255)))
		}
	}
	return 0
}

// palette is black for the set and a 255-step gradient through deep blue,
// white, gold and back for the outside.
var palette = func() color.Palette {
	stops := []struct {
		at      float64
		r, g, b float64
	}{
		{0, 0, 7, 100}, {0.16, 32, 107, 203}, {0.42, 237, 255, 255}, {0.6425, 255, 170, 0}, {0.8575, 0, 2, 0}, {1, 0, 7, 100},
	}
	p := make(color.Palette, 256)
	p[0] = color.RGBA{A: 255}
	for i := 1; i < 256; i++ {
		t := float64(i-1) / 254
		j := 0
		for j < len(stops)-2 && t > stops[j+1].at {
			j++
		}
		a, b := stops[j], stops[j+1]
		f := (t - a.at) / (b.at - a.at)
		lerp := func(x, y float64) uint8 { return uint8(x + (y-x)*f + 0.5) }
		p[i] = color.RGBA{lerp(a.r, b.r), lerp(a.g, b.g), lerp(a.b, b.b), 255}
	}
	return p
}()
