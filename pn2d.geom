; PNCCD1MP geometry file written by EXtra-geom 1.17.0
; You may need to edit this file to add:
; - data and mask locations in the file
; - mask_good & mask_bad values to interpret the mask
; - adu_per_eV & photon_energy
; - clen (detector distance)
;
; See: http://www.desy.de/~twhite/crystfel/manual-crystfel_geometry.html


data = /entry_1/instrument_1/detector_1/data ;
dim0 = %
res = 13333.333333333334 ; pixels per metre

; Beam energy in eV
; photon_energy = SET ME

; Camera length, aka detector distance
; clen = SET ME

; Analogue Digital Units per eV
; adu_per_eV = SET ME
rigid_group_p0 = p0a0
rigid_group_p1 = p1a0
rigid_group_collection_modules = p0,p1

p0a0/dim1 = ss
p0a0/dim2 = fs
p0a0/min_fs = 0
p0a0/min_ss = 0
p0a0/max_fs = 1023
p0a0/max_ss = 511
p0a0/fs = +1.x +0.y
p0a0/ss = +0.x -1.y
p0a0/corner_x = -512.0
p0a0/corner_y = 538.6666666666667
p0a0/coffset = 0.0

p1a0/dim1 = ss
p1a0/dim2 = fs
p1a0/min_fs = 0
p1a0/min_ss = 512
p1a0/max_fs = 1023
p1a0/max_ss = 1023
p1a0/fs = +1.x +0.y
p1a0/ss = +0.x -1.y
p1a0/corner_x = -512.0
p1a0/corner_y = -26.666666666666668
p1a0/coffset = 0.0
