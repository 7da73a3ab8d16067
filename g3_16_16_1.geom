; Generic Detector geometry file written by EXtra-geom 1.17.0
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
rigid_group_p2 = p2a0
rigid_group_collection_modules = p0,p1,p2

p0a0/dim1 = 0
p0a0/dim2 = ss
p0a0/dim3 = fs
p0a0/min_fs = 0
p0a0/min_ss = 0
p0a0/max_fs = 15
p0a0/max_ss = 15
p0a0/fs = +0.x +1.y
p0a0/ss = +1.x +0.y
p0a0/corner_x = 0.0
p0a0/corner_y = 0.0
p0a0/coffset = 0.0

p1a0/dim1 = 1
p1a0/dim2 = ss
p1a0/dim3 = fs
p1a0/min_fs = 0
p1a0/min_ss = 0
p1a0/max_fs = 15
p1a0/max_ss = 15
p1a0/fs = +0.x +1.y
p1a0/ss = +1.x +0.y
p1a0/corner_x = 26.0
p1a0/corner_y = 0.0
p1a0/coffset = 0.0

p2a0/dim1 = 2
p2a0/dim2 = ss
p2a0/dim3 = fs
p2a0/min_fs = 0
p2a0/min_ss = 0
p2a0/max_fs = 15
p2a0/max_ss = 15
p2a0/fs = +0.x +1.y
p2a0/ss = +1.x +0.y
p2a0/corner_x = 52.0
p2a0/corner_y = 0.0
p2a0/coffset = 0.0
